import Foundation
import ReplicationTestSupport
import Testing

/// Real Synapse 1.6.1 code (from PyPI, in `.venv-synapse`) against our executable.
@Suite struct SynapseInteropTests {
    @Test func synapsesOwnClientAgainstOurServer() throws {
        let script = repositoryRoot.appendingPathComponent("Tests/Interop/synapse_client_against_sidecar.py").path
        let python = repositoryRoot.appendingPathComponent(".venv-synapse/bin/python").path
        let result = try runProcess(python, [script, sidecarExecutable.path])
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(result.output.contains(" passed, 0 failed"), "\(result.output)")
    }
}
