import Credentials
import XCTest

final class PasswordHashTests: XCTestCase {
    // Openwall's bcrypt test vectors (crypt_blowfish), plus one made by libxcrypt for `$2b$`.
    func testKnownVectorsMatchOnlyTheirPassword() throws {
        let vectors = [
            ("$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW", "U*U"),
            ("$2b$04$sAeA4ZHNyDJ1nEauR7v0FuyYbA9P8PiybMv.MhDbwvw18k3qf.h.a", "secret"),
        ]
        for (text, password) in vectors {
            let hash = try XCTUnwrap(PasswordHash(text))
            XCTAssertTrue(hash.matches(password), text)
            XCTAssertFalse(hash.matches(password + "x"), text)
            XCTAssertFalse(hash.matches(String(password.dropLast())), text)
            XCTAssertFalse(hash.matches(""), text)
        }
    }

    func testAHashWithAnotherPrefixIsCheckedTheSame() throws {
        // `htpasswd -B` writes `$2y$`: the same algorithm under another name.
        let hash = try XCTUnwrap(PasswordHash("$2y$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"))
        XCTAssertTrue(hash.matches("U*U"))
    }

    func testPlaintextAndOtherSchemesAreNotHashes() {
        for text in [
            "password", "", "$1$saltsalt$hash", "$5$rounds=5000$salt$hash",
            "$2b$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOe",  // one character short
            "$2b$99$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW",  // no such cost
            "$2b$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOe!",
        ] {
            XCTAssertNil(PasswordHash(text), text)
        }
    }

    func testAMadeHashMatchesItsPasswordAndIsSaltedAfresh() throws {
        let first = try XCTUnwrap(PasswordHash.make(password: "correct horse", cost: 4))
        let second = try XCTUnwrap(PasswordHash.make(password: "correct horse", cost: 4))
        XCTAssertTrue(first.text.hasPrefix("$2b$04$"))
        XCTAssertNotEqual(first, second)
        XCTAssertTrue(first.matches("correct horse"))
        XCTAssertTrue(second.matches("correct horse"))
        XCTAssertFalse(first.matches("correct horsE"))
    }

    func testAPasswordWithANulNeverMatches() throws {
        let hash = try XCTUnwrap(PasswordHash.make(password: "abc", cost: 4))
        XCTAssertFalse(hash.matches("abc\0def"))
    }

    func testConstantTimeEquals() {
        XCTAssertTrue(constantTimeEquals(Array("abc".utf8), Array("abc".utf8)))
        XCTAssertFalse(constantTimeEquals(Array("abc".utf8), Array("abd".utf8)))
        XCTAssertFalse(constantTimeEquals(Array("abc".utf8), Array("abcd".utf8)))
        XCTAssertFalse(constantTimeEquals([], [0]))
        XCTAssertTrue(constantTimeEquals([], []))
    }
}

final class CredentialsFileTests: XCTestCase {
    let hash = "$2a$05$CCCCCCCCCCCCCCCCCCCCC.E5YPO9kmyuRGyh0XouQYb4YMJKvyOeW"

    func testLinesCommentsAndVerification() throws {
        let file = try CredentialsFile(parsing: "# writers\n\npub:\(hash)\r\n", source: "creds")
        XCTAssertEqual(Array(file.hashes.keys), ["pub"])
        XCTAssertTrue(file.verify(name: "pub", password: "U*U"))
        XCTAssertFalse(file.verify(name: "pub", password: "nope"))
        XCTAssertFalse(file.verify(name: "other", password: "U*U"))
    }

    func testAPlaintextPasswordIsRefusedWithHowToHashIt() {
        XCTAssertThrowsError(try CredentialsFile(parsing: "pub:\(hash)\nprometheus:hunter2\n", source: "creds")) {
            let message = "\($0)"
            XCTAssertTrue(message.hasPrefix("creds line 2: the password of prometheus is not a bcrypt hash"), message)
            XCTAssertTrue(message.contains("htpasswd -nB prometheus"), message)
        }
    }

    func testMalformedAndDuplicateLines() {
        XCTAssertThrowsError(try CredentialsFile(parsing: "no colon here\n", source: "f")) {
            XCTAssertEqual("\($0)", "f line 1: expected NAME:HASH")
        }
        XCTAssertThrowsError(try CredentialsFile(parsing: ":\(hash)\n", source: "f"))
        XCTAssertThrowsError(try CredentialsFile(parsing: "a:\(hash)\na:\(hash)\n", source: "f")) {
            XCTAssertEqual("\($0)", "f line 2: a is listed twice")
        }
    }

    func testAMissingFileSaysWhich() {
        XCTAssertThrowsError(try CredentialsFile(contentsOf: "/nonexistent/creds")) {
            XCTAssertEqual("\($0)", "cannot read /nonexistent/creds")
        }
    }
}
