import ReplicationCore

/// A message on today's Redis bus either gets a reason to be counted under, or parses into a command whose
/// message, as this side would publish it, parses back to the same command on the same channel.
func checkBus(_ data: UnsafeRawBufferPointer) {
    switch BusCommand.parse(Array(data)) {
    case .failure(let reason):
        check(BusMalformedReason(rawValue: reason.rawValue) == reason, "reason \(reason) has no label of its own")
    case .success(let command):
        let name = data.prefix { $0 != UInt8(ascii: " ") }
        check(name.elementsEqual(command.name.rawValue.utf8), "\(command.name) parsed out of a message naming another")
        let message = command.message
        let reparsed = BusCommand.parse(Array(message.utf8))
        check(reparsed == .success(command), "\(message.debugDescription) parses as \(reparsed), not \(command)")
        check(
            command.channel(serverName: "hs") == (command.name == .USER_IP ? "hs/USER_IP" : "hs"),
            "\(command.name) published on \(command.channel(serverName: "hs"))")
    }
}
