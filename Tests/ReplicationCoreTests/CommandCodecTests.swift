import Testing

@testable import ReplicationCore

@Suite struct CommandCodecTests {
    /// The example session of the protocol, every line as it appears on the wire.
    static let exampleSession = [
        "SERVER localhost:8823",
        "PING 1490197665618",
        "NAME synapse.app.appservice",
        "PING 1490197665618",
        "REPLICATE events 1",
        "REPLICATE caches 1",
        "POSITION events 1",
        "POSITION caches 1",
        #"RDATA caches 2 ["get_user_by_id",["@01register-user:localhost:8823"],1490197670513]"#,
        #"RDATA events 14 ["ev", ["$149019767112vOHxz:localhost:8823", "!AFDCvgApUmpdfVjIXm:localhost:8823","m.room.guest_access","",null]]"#,
        "PING 1490197675618",
        "ERROR server shutting down",
        "USER_SYNC @bob:test.local start 1795835844465",
        "FEDERATION_ACK 1",
        "REMOVE_PUSHER m.http pushkey1 @alice:test.local",
        #"INVALIDATE_CACHE get_user_by_id ["@alice:test.local"]"#,
        #"USER_IP @alice:test.local ["syt_token", "127.0.0.1", "peer-client/1.0", "DEVICEID", 1795835844468]"#,
        "RDATA events batch [\"ev\", [\"$3-12:test.local\", \"!room12:test.local\", \"m.room.message\", null, null, null]]",
        "REPLICATE ALL NOW",
        "SYNC burst-done",
    ]

    func parse(_ line: String) -> Result<Command, LineError> {
        let (word, rest) = CommandCodec.split(line[...])
        guard let name = CommandName(rawValue: String(word)) else { return .failure(.invalidCommand(name: String(word))) }
        return CommandCodec.parse(name, rest: rest)
    }

    @Test(arguments: exampleSession)
    func roundTripsByteForByte(line: String) throws {
        let command = try parse(line).get()
        #expect(CommandCodec.encode(command) == line)
    }

    @Test func parsesTypedArguments() throws {
        #expect(try parse("REPLICATE events 1").get() == .replicate(stream: "events", from: .token(1)))
        #expect(try parse("REPLICATE events now").get() == .replicate(stream: "events", from: .now))
        #expect(
            try parse("USER_SYNC @u:x end 5").get() == .userSync(userID: "@u:x", state: .end, lastSyncMillis: 5))
        #expect(try parse("RDATA caches batch [1, 2, 3]").get() == .rdata(
            stream: "caches", token: .batch, row: RowJSON(text: "[1, 2, 3]", shape: .array(count: 3))))
        #expect(try parse("REMOVE_PUSHER a b c d").get() == .removePusher(appID: "a", pushKey: "b", userID: "c d"))
        #expect(try parse("PING").get() == .ping(""))
        #expect(try parse("FEDERATION_ACK  7 ").get() == .federationAck(token: 7))
    }

    @Test func aTokenBeyondSixtyFourBitsIsAheadNotAnError() throws {
        #expect(
            try parse("REPLICATE events 12345678901234567890123").get()
                == .replicate(stream: "events", from: .token(Int64.max)))
    }

    @Test func errorTextsMatchSynapse() {
        func text(_ line: String) -> String? {
            if case .failure(let error) = parse(line) { return error.errorText }
            return nil
        }
        #expect(
            text(#"INVALIDATE_CACHE get_user_by_id ["@a:test.local""#)
                == #"failed to parse line for  'INVALIDATE_CACHE': JSONDecodeError("Expecting ',' delimiter or ']': line 1 column 17 (char 16)") ('get_user_by_id ["@a:test.local"'):"#
        )
        #expect(
            text("REPLICATE events abc")
                == #"failed to parse line for  'REPLICATE': ValueError("invalid literal for int() with base 10: 'abc'") ('events abc'):"#
        )
        #expect(
            text("REPLICATE events")
                == "failed to parse line for  'REPLICATE': ValueError('not enough values to unpack (expected 2, got 1)') ('events'):"
        )
        #expect(
            text("USER_SYNC @u:x stop 1")
                == #"failed to parse line for  'USER_SYNC': Exception("Invalid USER_SYNC state 'stop'") ('@u:x stop 1'):"#
        )
        #expect(
            text(#"USER_IP @u:x ["a", "b"]"#)
                == #"failed to parse line for  'USER_IP': ValueError('not enough values to unpack (expected 5, got 2)') ('@u:x ["a", "b"]'):"#
        )
        #expect(
            text("REPLICATE")
                == "failed to parse line for  'REPLICATE': ValueError('not enough values to unpack (expected 2, got 1)') (''):")
        #expect(text("FOO bar") == "invalid command: FOO")
    }

    @Test func invalidateCacheKeysMustBeAJSONArray() {
        for keys in [#"{"a": 1}"#, "5", #""@a:x""#, "null"] {
            #expect(
                parse("INVALIDATE_CACHE get_user_by_id \(keys)")
                    == .failure(
                        .unparsable(
                            name: .INVALIDATE_CACHE,
                            reason: "ValueError('INVALIDATE_CACHE keys must be a JSON array')",
                            rest: "get_user_by_id \(keys)")))
        }
        #expect(
            parse(#"INVALIDATE_CACHE f [["@a:x", 1]]"#).map(\.name) == .success(.INVALIDATE_CACHE))
    }

    @Test func pythonIntRules() {
        #expect(PythonInt.parse("1_000") == 1000)
        #expect(PythonInt.parse("-5") == -5)
        #expect(PythonInt.parse("+5") == 5)
        #expect(PythonInt.parse("_1") == nil)
        #expect(PythonInt.parse("1__0") == nil)
        #expect(PythonInt.parse("") == nil)
        #expect(PythonInt.parse("1.0") == nil)
        #expect(PythonInt.parse("9223372036854775807") == Int64.max)
        #expect(PythonInt.parse("9223372036854775808") == nil)
        #expect(PythonInt.parse("-9223372036854775808") == Int64.min)
        #expect(PythonInt.parse("99999999999999999999", overflow: .clamp) == Int64.max)
    }

    @Test func pythonReprPicksQuotesLikePython() {
        #expect(pythonRepr("abc") == "'abc'")
        #expect(pythonRepr("it's") == #""it's""#)
        #expect(pythonRepr(#"it's "x""#) == #"'it\'s "x"'"#)
        #expect(pythonRepr("a\tb\u{1}") == #"'a\tb\x01'"#)
    }

    @Test func overlongErrorsAreShortenedOtherCommandsDropped() {
        let long = String(repeating: "é", count: 100)
        let error = CommandCodec.line(for: .error(long), maxLength: 51)
        #expect(error != nil && error!.utf8.count <= 51 && error!.hasPrefix("ERROR é"))
        #expect(CommandCodec.line(for: .sync(long), maxLength: 51) == nil)
        #expect(CommandCodec.line(for: .sync("x"), maxLength: 51) == "SYNC x")
    }

    @Test func jsonTextEncodesLikeSynapse() {
        #expect(JSONText.array([JSONText.string("@a:b"), "true"]) == #"["@a:b", true]"#)
        #expect(JSONText.string("é\"\n😀") == #""\u00e9\"\n\ud83d\ude00""#)
    }
}
