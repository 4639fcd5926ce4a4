// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "intilery-relay",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "intilery-relay", targets: ["intilery-relay"]),
        .executable(name: "relay-bench", targets: ["relay-bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-async-algorithms", from: "1.1.3"),
        .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
    ],
    targets: [
        .systemLibrary(
            name: "CCurl",
            pkgConfig: "libcurl",
            providers: [.apt(["libcurl4-openssl-dev"])]
        ),
        .target(name: "CurlHTTP", dependencies: ["CCurl"]),
        // A C target only so that `make release` can stamp the git commit (a generated header) for `version`.
        .target(name: "CBuildInfo"),
        // SQLite's process-wide settings, made when the binary loads (SQLite reads them only before its first use).
        .target(name: "CSQLiteSetup", dependencies: [.product(name: "GRDBSQLite", package: "GRDB.swift")]),
        // glibc's malloc_trim, which Swift's Glibc module does not export.
        .target(name: "CHeap"),
        .target(name: "RelayJSON"),
        .target(
            name: "RelayCore",
            dependencies: [
                "RelayJSON",
                "CurlHTTP",
                "CBuildInfo",
                "CSQLiteSetup",
                "CHeap",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "AsyncAlgorithms", package: "swift-async-algorithms"),
                .product(name: "DequeModule", package: "swift-collections"),
                "HTTPServer",
            ]
        ),
        .target(
            name: "HTTPServer",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ]
        ),
        .target(
            name: "IntilerySimulator",
            dependencies: [
                "HTTPServer",
                .product(name: "Crypto", package: "swift-crypto"),
            ]
        ),
        .executableTarget(
            name: "intilery-relay",
            dependencies: [
                "RelayCore",
                "RelayPostgres",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                "RelayJSON",
                "IntilerySimulator",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .executableTarget(
            name: "relay-bench",
            dependencies: [
                "RelayCore", "RelayJSON", "CurlHTTP", "IntilerySimulator", "RelayPostgres", .product(name: "Logging", package: "swift-log"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]
        ),
        // PostgreSQL as the state that several instances share (`store: {"postgres": ...}`).
        .target(
            name: "RelayPostgres",
            dependencies: [
                "RelayCore", "CurlHTTP", .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"), .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
            ]
        ),
        .testTarget(name: "CurlHTTPTests", dependencies: ["CurlHTTP", "HTTPServer"]),
        .testTarget(name: "IntilerySimulatorTests", dependencies: ["IntilerySimulator", "CurlHTTP", "RelayJSON"]),
        .testTarget(name: "RelayJSONTests", dependencies: ["RelayJSON"]),
        .testTarget(
            name: "RelayCoreTests",
            dependencies: [
                "RelayCore", "IntilerySimulator", "CurlHTTP", "RelayPostgres", "CSQLiteSetup",
                .product(name: "GRDB", package: "GRDB.swift"), .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]),
        .testTarget(
            name: "RelayPostgresTests",
            dependencies: [
                "RelayPostgres", "RelayCore", "RelayJSON", "IntilerySimulator", "CurlHTTP",
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]),
        .testTarget(
            name: "EndToEndTests",
            dependencies: [
                "intilery-relay", "RelayCore", "RelayJSON", "IntilerySimulator", "CurlHTTP", "RelayPostgres",
                .product(name: "PostgresNIO", package: "postgres-nio"),
            ]),
    ],
    swiftLanguageModes: [.v6]
)
