import NIOCore

extension EventLoopFuture {
    /// A future of what `transform` makes of this one's value or error, so that a failure is answered as a
    /// value rather than lost.
    func mapOutcome<NewValue: Sendable>(
        _ transform: @escaping @Sendable (Result<Value, any Error>) -> NewValue
    ) -> EventLoopFuture<NewValue> {
        map { transform(.success($0)) }.recover { transform(.failure($0)) }
    }
}
