import Logging
import PostgresNIO

/// A lease held on PostgreSQL: which instance polls a token group. `epoch` steps by one at each change of holder,
/// and every write that moves the group's cursor is fenced by it.
public struct Lease: Sendable, Equatable {
    public let key: String
    public let holder: String
    public let epoch: Int64
}

/// A fenced write found its lease gone: another instance holds the key now (or it expired unrenewed). Nothing of
/// the write was committed; the former holder must stop polling.
public struct LeaseLost: Error, Equatable, CustomStringConvertible {
    public let key: String
    public let epoch: Int64

    /// The lease on `key` at `epoch` was lost.
    public init(key: String, epoch: Int64) {
        self.key = key
        self.epoch = epoch
    }

    public var description: String { "the lease on \(key) (epoch \(epoch)) is no longer held" }
}

/// Leases with fencing epochs in one schema of a PostgreSQL database, shared by every relay instance: a row
/// per key, whose epoch steps at every change of holder. Expiry is decided only by the database's clock, so instances whose clocks disagree still agree
/// on who holds a key.
public struct PostgresLeases: Sendable, PostgresPart {
    let database: RelayDatabase

    /// Leases in `database`.
    public init(_ database: RelayDatabase) {
        self.database = database
    }

    /// Takes `key` for `holder` for `ttl`, if nobody holds it or its holder let it expire; nil while it is held. A
    /// takeover steps the epoch, and waits for a write the former holder has begun under its lease to commit.
    public func acquire(_ key: String, for holder: String, ttl: Duration) async throws -> Lease? {
        let milliseconds = ttl / .milliseconds(1)
        return try await client.transaction(logger: logger) { connection in
            // FOR UPDATE is the one row lock that waits for a fenced write's FOR KEY SHARE. Only an expired row is
            // locked, so that instances asking for a held lease never queue in front of its holder's renewal.
            let expired = try await connection.query(
                "SELECT epoch FROM \(unescaped: schema).lease WHERE key = \(key) AND expires_at < now() FOR UPDATE", logger: logger)
            var isExpired = false
            for try await _ in expired.decode(Int64.self) { isExpired = true }
            // The expiry counts from the clock, not from the transaction's start: the wait for the former holder's
            // write may have been long.
            let statement: PostgresQuery =
                isExpired
                    ? """
                    UPDATE \(unescaped: schema).lease
                    SET holder = \(holder), epoch = epoch + 1, expires_at = clock_timestamp() + \(milliseconds) * interval '1 millisecond'
                    WHERE key = \(key) RETURNING epoch
                    """
                    : """
                    INSERT INTO \(unescaped: schema).lease (key, holder, epoch, expires_at)
                    VALUES (\(key), \(holder), 1, clock_timestamp() + \(milliseconds) * interval '1 millisecond')
                    ON CONFLICT (key) DO NOTHING RETURNING epoch
                    """
            let taken = try await connection.query(statement, logger: logger)
            for try await epoch in taken.decode(Int64.self) { return Lease(key: key, holder: holder, epoch: epoch) }
            return nil
        }
    }

    /// Extends a lease held now by `ttl` from the database's now; false if it has expired or changed hands, in which
    /// case the holder must stop at once.
    public func renew(_ lease: Lease, ttl: Duration) async throws -> Bool {
        let rows = try await client.query(
            """
            UPDATE \(unescaped: schema).lease SET expires_at = now() + \(ttl / .milliseconds(1)) * interval '1 millisecond'
            WHERE key = \(lease.key) AND holder = \(lease.holder) AND epoch = \(lease.epoch) AND expires_at > now()
            RETURNING epoch
            """, logger: logger)
        for try await _ in rows.decode(Int64.self) { return true }
        return false
    }

    /// Gives a lease up at a graceful stop, so that another instance takes it at its next try, not after the TTL.
    public func release(_ lease: Lease) async throws {
        try await client.query(
            """
            UPDATE \(unescaped: schema).lease SET expires_at = now() - interval '1 millisecond'
            WHERE key = \(lease.key) AND holder = \(lease.holder) AND epoch = \(lease.epoch)
            """, logger: logger)
    }

    /// Runs `body` in a transaction that first checks, and locks, the lease: it commits only while the lease is
    /// held, and a takeover waits for it. Throws ``LeaseLost`` (committing nothing) when the lease is gone. The lock is
    /// FOR KEY SHARE, which the holder's own renewal (an UPDATE of no key column) does not wait for: a long write
    /// must not make the renewal late and the lease lost.
    public func fenced<Result: Sendable>(
        by lease: Lease, _ body: (PostgresConnection) async throws -> Result
    ) async throws -> Result {
        try await client.transaction(logger: logger) { connection in
            let rows = try await connection.query(
                """
                SELECT epoch FROM \(unescaped: schema).lease
                WHERE key = \(lease.key) AND holder = \(lease.holder) AND epoch = \(lease.epoch) AND expires_at > now()
                FOR KEY SHARE
                """, logger: logger)
            var held = false
            for try await _ in rows.decode(Int64.self) { held = true }
            guard held else { throw LeaseLost(key: lease.key, epoch: lease.epoch) }
            return try await body(connection)
        }
    }

    /// Moves a source's cursor forward under `lease`: never back, and never by a former holder.
    public func advanceCursor(of source: String, to position: Int64, by lease: Lease) async throws {
        try await fenced(by: lease) { connection in
            _ = try await connection.query(
                """
                INSERT INTO \(unescaped: schema).cursor AS c (source, position, epoch, updated_at)
                VALUES (\(source), \(position), \(lease.epoch), now())
                ON CONFLICT (source) DO UPDATE
                    SET position = greatest(c.position, excluded.position), epoch = excluded.epoch, updated_at = now()
                """, logger: logger)
        }
    }

    /// A source's cursor, or nil before its first commit.
    public func cursor(of source: String) async throws -> Int64? {
        let rows = try await client.query(
            "SELECT position FROM \(unescaped: schema).cursor WHERE source = \(source)", logger: logger)
        for try await position in rows.decode(Int64.self) { return position }
        return nil
    }
}
