import ReplicationCore
import Testing

@Suite struct BusCommandTests {
    func parse(_ text: String) -> Result<BusCommand, BusMalformedReason> { BusCommand.parse(Array(text.utf8)) }

    @Test func commandsAsSynapse163PublishesThem() throws {
        #expect(
            try parse(#"RDATA events master batch ["ev",["$t","!r","m.room.create","",null,null,null,0,0]]"#).get()
                == .rdata(
                    stream: "events", instance: "master", token: nil,
                    row: #"["ev",["$t","!r","m.room.create","",null,null,null,0,0]]"#))
        #expect(
            try parse("RDATA typing worker1 1 [\"!r\",[\"@c:h\"]]").get()
                == .rdata(stream: "typing", instance: "worker1", token: 1, row: "[\"!r\",[\"@c:h\"]]"))
        #expect(
            try parse("POSITION events master 20 21").get()
                == .position(stream: "events", instance: "master", previousToken: 20, newToken: 21))
        #expect(try parse("REPLICATE ").get() == .replicate)
        #expect(try parse("REPLICATE").get() == .replicate)
        #expect(
            try parse("USER_SYNC w1 @a:h None end 17").get()
                == .userSync(instance: "w1", userID: "@a:h", deviceID: nil, syncing: false, lastSyncMillis: 17))
        #expect(
            try parse(#"LOCK_RELEASED ["master","purge_pagination_lock","!r\u00e9\ud83d\udd11"]"#).get()
                == .lockReleased(instance: "master", lockName: "purge_pagination_lock", lockKey: "!ré🔑"))
        #expect(try parse("CANCEL_TASK t1").get() == .cancelTask(id: "t1"))
        #expect(BusCommand.userIP(userID: "@a:h", details: "[]").channel(serverName: "h") == "h/USER_IP")
        #expect(BusCommand.replicate.channel(serverName: "h") == "h")
    }

    @Test func whatSynapseWouldRefuseIsCountedByReason() {
        for (message, reason) in [
            ("", BusMalformedReason.empty), ("SUBSCRIBE x", .unknownCommand),
            ("NEW_COMMAND_OF_2027 a b", .unknownCommand),
            ("RDATA events master 1", .missingArguments), ("RDATA events master x []", .badToken),
            ("RDATA events master 1 [1,", .badJSON), ("POSITION events master 1", .missingArguments),
            ("POSITION events master 1 2x", .badToken), ("USER_SYNC w @u d maybe 1", .badUserSyncState),
            ("FEDERATION_ACK w 1 2", .missingArguments), ("USER_IP @u [1,2]", .badJSON),
            ("LOCK_RELEASED [\"a\",\"b\"]", .badJSON), ("LOCK_RELEASED [\"a\",\"b\",3]", .badJSON),
            ("LOCK_RELEASED [\"a\",\"b\",\"\\ud83d\"]", .badJSON),
        ] {
            #expect(parse(message) == .failure(reason), "\(message)")
        }
        #expect(BusCommand.parse([0x52, 0xFF]) == .failure(.invalidUTF8))
    }
}

@Suite struct BusObservationTests {
    var observation = BusObservation()

    mutating func feed(_ messages: String..., at millis: Int64 = 1_000) {
        for message in messages { observation.observe(Array(message.utf8), atMillis: millis) }
    }

    func state(_ stream: String, _ instance: String) -> BusObservation.WriterState? {
        observation.writers[.init(stream: stream, instance: instance)]
    }

    @Test mutating func rowsAndPositionsPerStreamAndWritingInstance() {
        feed(
            "RDATA events master batch [\"ev\",[]]", "RDATA events master 12 [\"state\",[]]",
            "RDATA typing worker1 3 [\"!r\",[]]", at: 5_000)
        #expect(state("events", "master") == .init(position: 12, rows: 2, gaps: 0))
        #expect(state("typing", "worker1") == .init(position: 3, rows: 1, gaps: 0))
        #expect(observation.lastSeenMillis == ["master": 5_000, "worker1": 5_000])
        feed("POSITION typing worker1 3 7", "POSITION typing worker1 5 4", at: 6_000)
        // Never backwards: 4 after 7 stays 7; the previous token 5 is not beyond what was seen (7).
        #expect(state("typing", "worker1") == .init(position: 7, rows: 1, gaps: 0))
        #expect(observation.commands[BusCommandName.allCases.firstIndex(of: .POSITION)!] == 2)
    }

    @Test mutating func aPositionFromBeyondWhatWasSeenIsAGap() {
        feed("RDATA events master 20 []", "POSITION events master 20 20")
        #expect(state("events", "master")?.gaps == 0)
        feed("POSITION events master 25 25")  // rows 21...25 went by unseen
        #expect(state("events", "master") == .init(position: 25, rows: 1, gaps: 1))
        feed("POSITION events other 9 9")  // a first POSITION from an instance is no gap
        #expect(state("events", "other")?.gaps == 0)
    }

    @Test mutating func syncingUsersPerInstance() {
        feed(
            "USER_SYNC w1 @a:h D1 start 1", "USER_SYNC w1 @a:h D2 start 1", "USER_SYNC w1 @b:h None start 1",
            "USER_SYNC w2 @c:h None start 1", "USER_SYNC w1 @a:h D1 end 2")
        #expect(observation.syncing["w1"]?.count == 2 && observation.syncing["w2"]?.count == 1)
        feed("CLEAR_USER_SYNC w1")
        #expect(observation.syncing["w1"]?.isEmpty == true && observation.syncing["w2"]?.count == 1)
    }

    @Test mutating func malformedMessagesAndSizesAreCounted() {
        feed("BOGUS", "", "RDATA events master x []", String(repeating: "x", count: 100_000))
        #expect(observation.malformed[BusMalformedReason.allCases.firstIndex(of: .unknownCommand)!] == 2)
        #expect(observation.malformed[BusMalformedReason.allCases.firstIndex(of: .empty)!] == 1)
        #expect(observation.malformed[BusMalformedReason.allCases.firstIndex(of: .badToken)!] == 1)
        #expect(observation.sizeCounts == [3, 0, 0, 0, 0, 0, 0, 0, 0, 1])
        #expect(observation.sizeSum == 5 + 0 + 24 + 100_000)
        #expect(observation.writers.isEmpty && observation.commands.allSatisfy { $0 == 0 })
    }
}
