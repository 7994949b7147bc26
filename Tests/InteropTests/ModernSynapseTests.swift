import Foundation
import ReplicationTestSupport
import Testing

/// Today's Synapse (1.163.2 from PyPI, in `.venv-synapse-modern`): a main process and a worker writing the
/// `typing` stream, on PostgreSQL and Redis, watched by `observe` and `tail --redis`.
@Suite struct ModernSynapseTests {
    @Test func observeAndTailARealDeploymentAcrossARedisRestart() throws {
        let script = repositoryRoot.appendingPathComponent("Tests/InteropModern/synapse_deployment.py").path
        let python = repositoryRoot.appendingPathComponent(".venv-synapse-modern/bin/python").path
        let result = try runProcess(python, [script, sidecarExecutable.path])
        #expect(result.status == 0, "\(result.output)\(result.errors)")
        #expect(result.output.contains(" passed, 0 failed"), "\(result.output)")
    }
}
