import Foundation
import ReplicationCore
import ReplicationTestSupport
import Testing

/// Synapse 1.163.2's own `parse_command_from_line` / `to_line` (from PyPI, in `.venv-synapse-modern`) as the
/// reference for every bus command.
@Suite struct SynapseCodecTests {
    func synapse(_ mode: String, input: String = "") throws -> [String?] {
        let python = repositoryRoot.appendingPathComponent(".venv-synapse-modern/bin/python").path
        let script = repositoryRoot.appendingPathComponent("Tests/InteropModern/bus_codec.py").path
        let result = try runProcess(python, [script, mode], input: input)
        try #require(result.status == 0, "\(result.errors)")
        return try JSONDecoder().decode([String?].self, from: Data(result.output.utf8))
    }

    @Test func everyCommandSynapseWritesIsParsedAndWrittenBackTheSame() throws {
        let messages = try synapse("emit").compactMap { $0 }
        #expect(Set(messages.map { String($0.prefix { $0 != " " }) }) == Set(BusCommandName.allCases.map(\.rawValue)))
        for message in messages {
            let command = try BusCommand.parse(Array(message.utf8)).get()
            #expect(command.message == message)
        }
    }

    @Test func synapseReadsWhatWeWriteAndRefusesWhatWeRefuse() throws {
        let ours: [BusCommand] = [
            .rdata(stream: "events", instance: "master", token: nil, row: "[\"ev\",[\"$e\",null]]"),
            .rdata(stream: "presence", instance: "master", token: 6, row: "[\"@c:h\",\"online\",1,2,3,null,1]"),
            .position(stream: "events", instance: "persister-2", previousToken: 1, newToken: 99),
            .replicate, .userSync(instance: "w", userID: "@u:h", deviceID: "D", syncing: true, lastSyncMillis: 5),
            .userSync(instance: "w", userID: "@u:h", deviceID: nil, syncing: false, lastSyncMillis: 6),
            .clearUserSync(instance: "w"), .federationAck(instance: "fed", token: 3),
            .userIP(userID: "@u:h", details: "[\"t\",\"::1\",\"ua\",null,1]"), .remoteServerUp(server: "o.example"),
            .lockReleased(instance: "w", lockName: "l\"n", lockKey: "k\u{7}é😀"), .newActiveTask(id: "a"),
            .cancelTask(id: "b"),
        ]
        let refused = [
            "RDATA events master x []", "RDATA events master 1 [", "POSITION events master 1",
            "USER_SYNC w @u D maybe 1",
            "FEDERATION_ACK w", "USER_IP @u [1,2]", "LOCK_RELEASED [\"a\"]", "NO_SUCH_COMMAND x",
        ]
        let input = String(decoding: try JSONEncoder().encode(ours.map(\.message) + refused), as: UTF8.self)
        let answers = try synapse("roundtrip", input: input)
        #expect(Array(answers.prefix(ours.count)) == ours.map(\.message))
        #expect(answers.dropFirst(ours.count).allSatisfy { $0 == nil }, "\(answers)")
        for message in refused {
            #expect(throws: BusMalformedReason.self) { try BusCommand.parse(Array(message.utf8)).get() }
        }
    }
}
