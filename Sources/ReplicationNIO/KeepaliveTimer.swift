import NIOCore

/// The keepalive's tick on a connection's event loop, from when the channel becomes active until it goes.
struct KeepaliveTimer {
    private let interval: TimeAmount
    private var task: RepeatedTask?

    init(every interval: TimeAmount) { self.interval = interval }

    mutating func start(on eventLoop: any EventLoop, _ tick: @escaping () -> Void) {
        let tick = NIOLoopBound(tick, eventLoop: eventLoop)
        task = eventLoop.scheduleRepeatedTask(initialDelay: interval, delay: interval) { _ in tick.value() }
    }

    mutating func stop() { task.take()?.cancel() }
}
