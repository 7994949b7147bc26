/// Commands received and sent on one connection, by command. Plain integers: they are owned by the
/// connection's event loop and copied out when metrics are scraped.
public struct CommandCounters: Sendable, Equatable {
    public private(set) var inbound = [Int](repeating: 0, count: CommandName.allCases.count)
    public private(set) var outbound = [Int](repeating: 0, count: CommandName.allCases.count)

    public init() {}

    public mutating func countInbound(_ name: CommandName, by count: Int = 1) { inbound[name.index] += count }
    public mutating func countOutbound(_ name: CommandName, by count: Int = 1) { outbound[name.index] += count }

    /// Adds another connection's counts: totals per name, kept after the connection closes.
    public mutating func add(_ other: CommandCounters) {
        for index in inbound.indices {
            inbound[index] += other.inbound[index]
            outbound[index] += other.outbound[index]
        }
    }

    public func inbound(_ name: CommandName) -> Int { inbound[name.index] }
    public func outbound(_ name: CommandName) -> Int { outbound[name.index] }
}
