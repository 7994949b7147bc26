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

    @Test func sameInputSameAnswerAsSynapsesServer() throws {
        try runScript("same_input_same_answer.py")
    }
}
