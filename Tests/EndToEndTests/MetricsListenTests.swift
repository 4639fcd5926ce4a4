import Foundation
import Testing
#if canImport(Glibc)
import Glibc
#endif

/// `metrics.listen: ":PORT"` is every interface, IPv4 ones too, on a host whose net.ipv6.bindv6only is 1 (where a
/// plain "::" socket would take IPv6 only; SwiftNIO clears IPV6_V6ONLY on every IPv6 socket it opens, and this
/// keeps it so). The setting belongs to a network namespace, so the relay runs in a new one (root only, as CI
/// runs), with the setting at 1 and the metrics asked for over IPv4.
@Suite struct MetricsListenTests {
    /// Root, the tools, and a container that lets root make a network namespace (not every one does).
    static let canMakeNamespaces = getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/bin/unshare")
        && FileManager.default.isExecutableFile(atPath: "/usr/bin/curl")
        && ChildProcess.runQuietly("/usr/bin/unshare", ["--net", "/bin/true"]) == 0

    @Test(.enabled(if: canMakeNamespaces, "needs root, unshare(1), curl(1) and a network namespace"))
    func everyInterfaceTakesIPv4WhereIPv6SocketsDefaultToIPv6Only() async throws {
        try await withTemporaryDirectory { directory in
            let config = directory.appendingPathComponent("config.json")
            try #"""
                {"stateDirectory": "./state", "metrics": {"listen": ":9464"}, "shutdownGrace": "1s",
                 "sources": [{"name": "acme", "baseURL": "http://127.0.0.1:1", "clientId": "acme", "accountId": "acme",
                              "brandId": "ACME", "authToken": "t"}],
                 "subscriptions": [{"name": "s", "webhook": {"url": "http://127.0.0.1:1/hook"}}]}
                """#.write(to: config, atomically: true, encoding: .utf8)
            let script = """
                ip link set lo up && echo 1 > /proc/sys/net/ipv6/bindv6only || exit 90
                "$0" run --config "$1" 2>relay.log &
                relay=$!
                for _ in $(seq 1 200); do
                  if curl -sf http://127.0.0.1:9464/healthz; then kill $relay; wait $relay; exit 0; fi
                  kill -0 $relay 2>/dev/null || exit 91
                  sleep 0.05
                done
                kill $relay; exit 92
                """
            let outcome = try await RelayBinary.run(
                ["--net", "sh", "-c", script, RelayBinary.path, config.path], environment: nil, in: directory, executable: "/usr/bin/unshare")
            let log = (try? String(contentsOf: directory.appendingPathComponent("relay.log"), encoding: .utf8)) ?? ""
            #expect(outcome.status == 0, "status \(outcome.status) (90: no namespace, 91: the relay ended, 92: no answer on IPv4)\n\(outcome.standardError)\n\(log)")
            #expect(outcome.standardOutput == "ok\n")
            #expect(log.contains("metrics listening") && log.contains("[::]:9464"), "\(log)")
        }
    }
}
