import Credentials
import NIOCore
import NIOPosix

/// Checks the secret of a writer's `AUTH`: on the thread pool, as bcrypt is slow on purpose, and a wrong
/// one is answered only after ``ServerConfiguration/authenticationFailureDelay``, so that guessing is slow.
struct WriterSecretCheck: Sendable {
    let credentials: CredentialsFile?
    let failureDelay: TimeAmount

    init(_ configuration: ServerConfiguration) {
        self.credentials = configuration.writerCredentials
        self.failureDelay = configuration.authenticationFailureDelay
    }

    /// `true` as soon as checked; `false` after the delay, the wrong secret logged as soon as found.
    func verify(
        writer: String, secret: String, log: ConnectionLog, on eventLoop: any EventLoop
    ) -> EventLoopFuture<Bool> {
        NIOThreadPool.singleton.runIfActive(eventLoop: eventLoop) { [credentials] in
            credentials?.verify(name: writer, password: secret) ?? false
        }.mapOutcome { (try? $0.get()) ?? false }.flatMap { [failureDelay] succeeded in
            guard !succeeded else { return eventLoop.makeSucceededFuture(true) }
            // Counted when the connection ends, under its close reason `authentication_failed`.
            log.wrongSecret(writer: writer)
            return eventLoop.scheduleTask(in: failureDelay) { false }.futureResult
        }
    }
}
