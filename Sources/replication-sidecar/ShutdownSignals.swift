import Logging
import ServiceLifecycle
import UnixSignals

/// SIGTERM and SIGINT, trapped from the moment `trap()` returns. A command traps them before it says it is
/// ready: a service group traps its signals only once it runs, and a signal arriving before that would
/// take its default action and kill the process instead of shutting it down gracefully.
struct ShutdownSignals {
    private let signals: UnixSignalsSequence

    static func trap() async -> ShutdownSignals {
        ShutdownSignals(signals: await UnixSignalsSequence(trapping: .sigterm, .sigint))
    }

    /// Runs `group` to its end; a signal, whether it came before the group started or while it runs,
    /// shuts it down gracefully.
    func run(_ group: ServiceGroup, logger: Logger) async throws {
        try await withThrowingTaskGroup(of: Void.self) { tasks in
            tasks.addTask { [signals] in
                for await signal in signals {
                    logger.info("shutting down", metadata: ["signal": "\(signal)"])
                    await group.triggerGracefulShutdown()
                }
            }
            try await group.run()
            tasks.cancelAll()
        }
    }
}
