import Foundation
import ReplicationTestSupport
import Testing

/// Real Synapse 1.6.1 code (from PyPI, in `.venv-synapse`) against our executable.
@Suite struct SynapseInteropTests {
    /// Runs one of the Python scripts in `Tests/Interop` with Synapse's environment; they print one line per
    /// check and close with "N passed, M failed".
    func runScript(_ name: String) throws {
        let script = repositoryRoot.appendingPathComponent("Tests/Interop/\(name)").path
        let python = repositoryRoot.appendingPathComponent(".venv-synapse/bin/python").path
        let result = try runProcess(python, [script, sidecarExecutable.path])
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(result.output.contains(" passed, 0 failed"), "\(result.output)")
    }

    @Test func synapsesOwnClientAgainstOurServer() throws {
        try runScript("synapse_client_against_sidecar.py")
    }

    @Test func synapsesOwnServerAgainstOurTail() throws {
        try runScript("synapse_server_against_tail.py")
    }

    @Test func synapsesServerUpstreamOfARelayAndSynapsesClientBehindIt() throws {
        try runScript("synapse_through_relay.py")
    }

    @Test func synapsesClientOnOneSidecarRowsWrittenOnAnotherThroughRedis() throws {
        try runScript("synapse_through_redis.py")
    }

    /// Whether hosts can be made of network namespaces here: root, and `ip netns` working (a container
    /// without the right to make namespaces has `ip` but fails there).
    static let canMakeHosts: Bool = {
        guard getuid() == 0 else { return false }
        let probe = "rs-probe-\(getpid())"
        guard (try? runProcess("/usr/bin/env", ["ip", "netns", "add", probe]))?.status == 0 else { return false }
        defer { _ = try? runProcess("/usr/bin/env", ["ip", "netns", "del", probe]) }
        // Running a process there also mounts a /sys of its own, which some containers refuse.
        return (try? runProcess("/usr/bin/env", ["ip", "netns", "exec", probe, "true"]))?.status == 0
    }()

    @Test(.enabled(if: canMakeHosts, "hosts in network namespaces need root and a working `ip netns` (iproute2)"))
    func synapsesClientOnHostBRowsWrittenOnHostAThroughRedisOnAThirdHostAcrossALinkCut() throws {
        try runScript("synapse_across_hosts.py")
    }

    @Test func sameInputSameAnswerAsSynapsesServer() throws {
        try runScript("same_input_same_answer.py")
    }
}
