"""Redaction: each kind of secret, its marker, idempotence, and what must stay untouched."""

from __future__ import annotations

import base64
import json
import logging
import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ingest.records import Dataset, DeadLetter, Event, Origin, RawRecord
from ingest.redact import Redactor
from ingest.redact_logs import RedactingLogFilter

KEY = b"test-key"
PAN = "4111111111111111"  # Luhn-valid test card
AMEX = "378282246310005"


def jwt(claims: dict[str, object]) -> str:
    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    return f"{part({'alg': 'RS256', 'typ': 'JWT'})}.{part(claims)}.c2lnbmF0dXJlLWJ5dGVz"


TOKEN = jwt({"jti": "tok-42", "sub": "alice", "org": "org-1"})


@pytest.fixture
def redactor() -> Redactor:
    return Redactor(hash_key=KEY)


def hashes(text: str) -> list[str]:
    return re.findall(r" h=([0-9a-f]{12})\]", text)


@pytest.mark.parametrize(
    ("text", "secret", "kept"),
    [
        (f"paid with {PAN} today", PAN, "[REDACTED:pan last4=1111 h="),
        ("card 4111 1111 1111 1111 exp 12/27", "4111 1111 1111 1111", "last4=1111"),
        ("card 4111-1111-1111-1111", "4111-1111-1111-1111", "last4=1111"),
        (f"amex {AMEX[:4]} {AMEX[4:10]} {AMEX[10:]}", AMEX[4:10], "last4=0005"),
        (f"amex {AMEX[:4]}-{AMEX[4:10]}-{AMEX[10:]}", AMEX[4:10], "last4=0005"),
        ("visa 4111-1111-1111-1111-003", "4111-1111-1111-1111", "[REDACTED:pan last4="),  # 19 digits pass too
        ("card 4111 1111 1111 1111 123", "4111 1111 1111 1111", "last4=1111"),  # a CVV stuck to it
        ("cvv: 123", "123", "cvv: [REDACTED:cvv h="),
        ('{"cvc":"9876"}', "9876", '"cvc":"[REDACTED:cvv h='),
        ("CVV2 042 given", "042", "CVV2 [REDACTED:cvv h="),
        (f"Authorization: Bearer {TOKEN}", TOKEN, "Bearer [REDACTED:jwt jti=tok-42 sub=alice h="),
        ("authorization: Basic dXNlcjpodW50ZXIy", "dXNlcjpodW50ZXIy", "Basic [REDACTED:authorization h="),
        (f"ua {TOKEN}", TOKEN, "[REDACTED:jwt jti=tok-42 sub=alice h="),
        ("Cookie: session=abc123; theme=dark", "abc123", "Cookie: [REDACTED:cookie h="),
        ('{"set-cookie": "sid=s3cr3t; Path=/"}', "s3cr3t", '"set-cookie": "[REDACTED:cookie h='),
        ("/login?user=bob&password=hunter2&next=/", "hunter2", "password=[REDACTED:secret h="),
        ("/cb?access_token=abc.def&x=1", "abc.def", "access_token=[REDACTED:secret h="),
        ("/v1?API-KEY=k-123", "k-123", "API-KEY=[REDACTED:secret h="),
        ('{"password": "correct horse \\"battery\\" staple"}', "horse", '"password": "[REDACTED:secret h='),
        ('{"client_secret":42}', "42", '"client_secret":"[REDACTED:secret h='),
        ('msg={\\"token\\":\\"t 0k\\"}', "t 0k", '\\"token\\":\\"[REDACTED:secret h='),
        ("https://elastic:changeme@es.local:9200/", "changeme", "https://elastic:[REDACTED:secret h="),
        # Shapes services log that a security trial found left whole: header lists (Go's http.Header as
        # JSON or %v, Python's repr), lists and objects under a secret's name, logfmt, spaces, apiKey.
        ('{"Authorization": ["Basic dXNlcjpodW50ZXIy"]}', "dXNlcjpodW50ZXIy",
         '{"Authorization": ["Basic [REDACTED:authorization h='),
        ("{'authorization': ['Bearer opaque123']}", "opaque123", "['Bearer [REDACTED:authorization h="),
        ("headers: map[Authorization:[Bearer opaque123]]", "opaque123", ":[Bearer [REDACTED:authorization h="),
        ('"cookie": ["sid=abc"]', "abc", '"cookie": "[REDACTED:cookie h='),
        ('{"api_key": ["ak_live_2", "ak_live_3"]}', "ak_live", '{"api_key": "[REDACTED:secret h='),
        ('{"password": {"old": "hunter1", "new": {"v": "hunter3"}}}', "hunter", '{"password": "[REDACTED:secret h='),
        ('{\\"password\\": {\\"old\\": \\"hunter1\\"}}', "hunter1", '{\\"password\\": \\"[REDACTED:secret h='),
        ('level=info password="hunter2" api_key="ak_live_3"', "hunter2", 'password="[REDACTED:secret h='),
        ('level=info password="hunter2" api_key="ak_live_3"', "ak_live_3", 'api_key="[REDACTED:secret h='),
        ("password = hunter2", "hunter2", "password = [REDACTED:secret h="),
        ("/v1?apiKey=ak_live_4&b=1", "ak_live_4", "apiKey=[REDACTED:secret h="),
        ('{"apikey": "ak_live_5"}', "ak_live_5", '{"apikey": "[REDACTED:secret h='),
    ],
)
def test_secret_is_replaced_by_its_marker(redactor: Redactor, text: str, secret: str, kept: str) -> None:
    out = redactor.redact(text)
    assert secret not in out
    assert kept in out
    assert redactor.redact(out) == out  # markers are never redacted again


@pytest.mark.parametrize(
    "text",
    [
        "/v1/invoices/in_34576850928671",  # an id with a Luhn-valid digit run inside
        "request 88864980-3998-4305-a2c5-22252aa3baf0",  # UUID with dash-joined digit groups
        "12345678-1234-1234-1234-123456789012",
        "4111111111111112",  # fails Luhn
        "4 1 1 1 1 1 1 1 1 1 1 1 1 1 1 1",  # not how a card is written: groups of 4, then 3-6
        "sha 3f4e41111111111111111ab",  # digits inside a hex string
        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0.0.0",
        "token_jti=abc tokens: 5 passwordless",  # names that only start like a secret's
        "spiffe://billing.example/ns/edge/sa/ambassador",
    ],
)
def test_look_alikes_stay_untouched(redactor: Redactor, text: str) -> None:
    assert redactor.redact(text) == text


def test_a_dead_letter_line_of_json_stays_json_with_its_secrets_replaced(redactor: Redactor) -> None:
    # A header list's "[" and the "\\" of an escaped quote were taken as the value: the marker then broke the JSON.
    line = {"ts": "not a time", "headers": {"Authorization": ["Basic dXNlcjpodW50ZXIy"], "Cookie": ["sid=abc"]},
            "msg": '{"token": ["t1"], "password": {"old": "p1"}}'}  # fmt: skip
    letter = DeadLetter(Origin(Dataset.APP, "s", 0), "invalid_value", "ts", json.dumps(line).encode())
    out = redactor.redact(letter).line.decode()
    for secret in ("dXNlcjpodW50ZXIy", "abc", "t1", "p1"):
        assert secret not in out
    parsed = json.loads(out)
    assert parsed["headers"]["Authorization"][0].startswith("Basic [REDACTED:authorization h=")
    assert json.loads(parsed["msg"])["password"].startswith("[REDACTED:secret h=")


def test_same_secret_same_hash_other_secret_other_hash(redactor: Redactor) -> None:
    first = redactor.redact(f"card {PAN} and password=hunter2")
    again = redactor.redact("4111 1111 1111 1111 in a message, /p?password=hunter2")
    other = redactor.redact("5555555555554444 password=hunter3")
    assert hashes(first) == hashes(again)
    assert set(hashes(first)).isdisjoint(hashes(other))
    # keyed: another key gives other hashes, so a hash cannot be looked up without the key
    assert set(hashes(Redactor(hash_key=b"other").redact(f"{PAN} password=hunter2"))).isdisjoint(hashes(first))


def test_jwt_claims_that_could_leak_are_left_out(redactor: Redactor) -> None:
    token = jwt({"jti": PAN, "sub": "a b]c"})
    out = redactor.redact(token)
    assert out.startswith("[REDACTED:jwt h=") and PAN not in out


def test_fake_marker_does_not_shield_a_secret(redactor: Redactor) -> None:
    out = redactor.redact(f"[REDACTED:pan {PAN} h=0123456789ab]")
    assert PAN not in out


def event(**fields: object) -> Event:
    origin = Origin(Dataset.APP, "app.log", 7)
    return Event(id="e-7", dataset=Dataset.APP, ts=1.0, origin=origin, **fields)  # type: ignore[arg-type]


def test_event_every_text_field_and_label(redactor: Redactor) -> None:
    clean = event(request_id="r-1", path="/v1/x", message="fine", user_agent="curl/8")
    assert redactor.redact(clean) is clean
    dirty = event(
        request_id="r-1",
        path="/login?password=hunter2",
        user_agent=f"bot {TOKEN}",
        message=f"charged {PAN}",
        user_id="u-1",
        labels=(("req.authorization", f"Bearer {TOKEN}"), ("req.x-api-key", "k-1"), ("req.x-other", "cvv 123")),
    )
    out = redactor.redact(dirty)
    text = repr(out)
    for secret in ("hunter2", TOKEN, PAN, "k-1", "cvv 123"):
        assert secret not in text
    assert out.request_id == "r-1" and out.user_id == "u-1" and out.id == dirty.id and out.origin == dirty.origin
    assert dict(out.labels)["req.authorization"].startswith("Bearer [REDACTED:jwt jti=tok-42")
    assert dict(out.labels)["req.x-api-key"].startswith("[REDACTED:secret h=")


def test_a_numeric_token_id_stays_what_revocation_lists_name(redactor: Redactor) -> None:
    # A red-team trial: jti 1798412345678901231 passes Luhn, was stored as a card number, and its revocation
    # went unseen (the list holds the raw id). A card number elsewhere in the same record is still redacted.
    luhn_jti = "1798412345678901231"
    out = redactor.redact(event(request_id="r-1", token_jti=luhn_jti, message=f"charged {PAN}"))
    assert out.token_jti == luhn_jti and PAN not in repr(out)
    assert PAN not in repr(redactor.redact(event(request_id="r-1", token_jti=f"card {PAN}")))  # text, not an id


def test_dead_letter_raw_line_and_detail(redactor: Redactor) -> None:
    raw = f'{{"ts": "x", "card": "{PAN}", "auth": "Bearer {TOKEN}"}}'.encode() + b"\xff"
    letter = DeadLetter(Origin(Dataset.APP, "app.log", 3), "invalid_value", f"ts: {PAN!r} is not ISO", raw)
    out = redactor.redact(letter)
    assert PAN.encode() not in out.line and TOKEN.encode() not in out.line and PAN not in out.detail
    assert out.line.endswith(b"\xff")  # bytes that are not UTF-8 stay as they were
    clean = DeadLetter(letter.origin, "invalid_json", "cut", b"\xff\xfe{")
    assert redactor.redact(clean) is clean


def test_wrap_redacts_what_a_parser_returns(redactor: Redactor) -> None:
    def parser(record: RawRecord) -> Event | DeadLetter:
        return event(message=record.line.decode())

    record = RawRecord(Origin(Dataset.APP, "app.log", 1), f"card {PAN}".encode())
    assert PAN not in (redactor.wrap(parser)(record).message or "")


def test_disabled_redactor_changes_nothing() -> None:
    assert Redactor(enabled=False).redact(f"card {PAN}") == f"card {PAN}"


def test_configured_names_extend_the_defaults() -> None:
    redactor = Redactor(query_params=("sig",), json_keys=("ssn",), headers=("x-session",), hash_key=KEY)
    out = redactor.redact('/p?sig=abc {"ssn": "123-45-6789"} X-Session: s1; password=still')
    assert "abc" not in out and "123-45-6789" not in out and "s1" not in out
    assert "password=still" in out  # the lists replace the defaults


def test_log_filter_redacts_message_and_arguments(caplog: pytest.LogCaptureFixture) -> None:
    log = logging.getLogger("gatewatch.test_redact")
    log.addFilter(RedactingLogFilter(Redactor(hash_key=KEY)))
    with caplog.at_level(logging.WARNING, logger="gatewatch.test_redact"):
        log.warning("store_unreachable url=%s card=%s", "http://u:p4ss@es:9200", PAN)
    assert "p4ss" not in caplog.text and PAN not in caplog.text
    assert "http://u:[REDACTED:secret h=" in caplog.text


def test_hash_key_from_file_env_or_random(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from gatewatch.config import load_config, parse_config
    from gatewatch.errors import ConfigError
    from ingest.redact import resolve_hash_key

    (tmp_path / "key").write_text("file-key\n")
    (tmp_path / "gatewatch.yaml").write_text("redact: {hash_key_file: key}\n")
    assert resolve_hash_key(load_config(tmp_path / "gatewatch.yaml").redact) == b"file-key"
    monkeypatch.setenv("GW_TEST_REDACT_KEY", "env-key")
    assert resolve_hash_key(parse_config({"redact": {"hash_key_env": "GW_TEST_REDACT_KEY"}}).redact) == b"env-key"
    monkeypatch.delenv("GATEWATCH_REDACT_KEY", raising=False)
    assert resolve_hash_key(parse_config({}).redact) is None  # a random key per process, with a warning
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="redact.hash_key_file: .* is empty"):
        resolve_hash_key(parse_config({"redact": {"hash_key_file": str(tmp_path / "empty")}}).redact)
    with pytest.raises(ConfigError, match="redact.bogus: unknown key"):
        parse_config({"redact": {"bogus": 1}})
    env = Redactor.from_config(parse_config({"redact": {"hash_key_env": "GW_TEST_REDACT_KEY"}}).redact)
    assert hashes(env.redact(PAN)) == hashes(Redactor(hash_key=b"env-key").redact(PAN))


@pytest.mark.parametrize("value", [None, ""])
def test_a_named_key_variable_unset_or_empty_stops_the_start_as_a_store_password_does(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], value: str | None
) -> None:
    """A trial: hash_key_env naming a variable nobody set fell back to a random key without a word, so one secret
    hashed differently in every run and replica; store.password_env in the same case stops with exit 2."""
    from gatewatch.cli import main

    if value is None:
        monkeypatch.delenv("GW_REDACT_KEY_TYPO", raising=False)
    else:
        monkeypatch.setenv("GW_REDACT_KEY_TYPO", value)
    monkeypatch.setenv("GATEWATCH_REDACT_KEY", "the-default-variable-is-not-asked-for")
    (tmp_path / "gatewatch.yaml").write_text("redact:\n  hash_key_env: GW_REDACT_KEY_TYPO\n")
    (tmp_path / "app.log").write_text("")
    code = main(["replay", "--config", str(tmp_path / "gatewatch.yaml"), "--app", str(tmp_path / "app.log"),
                 "--alerts-out", str(tmp_path / "a.ndjson"), "--store", "none"])  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "redact.hash_key_env: the environment variable GW_REDACT_KEY_TYPO is not set or empty" in err


def test_without_a_named_variable_the_default_one_is_read_or_a_random_key_used(monkeypatch: pytest.MonkeyPatch) -> None:
    from gatewatch.config import parse_config
    from ingest.redact import resolve_hash_key

    monkeypatch.setenv("GATEWATCH_REDACT_KEY", "default-env-key")
    assert resolve_hash_key(parse_config({}).redact) == b"default-env-key"
    monkeypatch.setenv("GATEWATCH_REDACT_KEY", "")
    assert resolve_hash_key(parse_config({}).redact) is None  # nothing asked for: a random key, serve warns


@given(
    before=st.text(alphabet=st.characters(blacklist_categories=("Nd", "Cs")), max_size=40),
    after=st.text(alphabet=st.characters(blacklist_categories=("Nd", "Cs")), max_size=40),
    secret=st.sampled_from([PAN, "4111 1111 1111 1111", AMEX, TOKEN]),
)
@settings(max_examples=300, deadline=None)
def test_a_secret_between_any_text_never_survives(before: str, after: str, secret: str) -> None:
    out = Redactor(hash_key=KEY).redact(f"{before} {secret} {after}")
    assert secret not in out and "[REDACTED:" in out


def test_a_bracket_inside_a_string_does_not_end_a_redacted_container(redactor: Redactor) -> None:
    # Re-verification: the object's marker ended at the "}" inside "p}1", leaving the new password in clear.
    for text in ('{"password":{"old":"p}1","new":"N3wPassw0rdLEAK"}}', '{"api_key": ["a]b", "ak_live_DLLEAK"]}'):
        out = redactor.redact(text)
        assert "LEAK" not in out and json.loads(out), out


def test_a_secret_nested_deep_in_a_container_never_survives(redactor: Redactor) -> None:
    # A trial: {"password": {"a": {"b": {"c": "..."}}}} kept its value in the clear, one level past the two a
    # container could hold; so did password={...} in a logfmt line, whose value was cut at its first quote.
    for text in ('{"password": {"a": {"b": {"c": "hunter2LEAK"}}}, "user": "bob"}',
                 '{"api_key": [{"k": [{"v": "hunter2LEAK"}]}], "user": "bob"}',
                 'login password={"a": {"b": {"c": "hunter2LEAK"}}} user=bob'):  # fmt: skip
        out = redactor.redact(text)
        assert "LEAK" not in out and "bob" in out, out
        assert redactor.redact(out) == out  # a second pass changes nothing
    assert json.loads(redactor.redact('{"password": {"a": {"b": {"c": "x"}}}, "user": "bob"}'))["user"] == "bob"
    deeper = '{"token": ' + "[" * 8 + '"hunter2LEAK"' + "]" * 8 + ', "user": "bob"}'
    assert "LEAK" not in redactor.redact(deeper)  # past the levels a container holds: the rest of the line


def test_every_value_of_an_authorization_header_list_is_redacted(redactor: Redactor) -> None:
    # A trial: the second credential of a header sent twice stayed in the clear.
    for text in ('{"Authorization": ["Basic dXNlcjpwYXNz", "Bearer opaqueLEAK"], "user": "bob"}',
                 "{'Authorization': ['Basic dXNlcjpwYXNz', 'Bearer opaqueLEAK'], 'user': 'bob'}",
                 "map[Authorization:[Bearer abc.def.ghi Basic opaqueLEAK] User-Agent:[curl]]",
                 "Authorization: Basic dXNlcjpwYXNz, Bearer opaqueLEAK"):  # fmt: skip
        out = redactor.redact(text)
        assert "LEAK" not in out and "dXNlcjpwYXNz" not in out, out
        assert redactor.redact(out) == out
    assert "Basic [REDACTED:authorization" in redactor.redact("Authorization: Bearer x, Basic y")  # scheme kept
    # Outside a list, a word after the credential is text: "token" is a scheme, "is" no credential.
    assert redactor.redact("Authorization: Bearer abc token is fine").endswith(" token is fine")


def test_a_query_placeholder_where_a_secret_goes_is_left_as_it_is(redactor: Redactor) -> None:
    # An earlier round's note: "where token = $1" became a marker, which reads as a secret logged.
    for text in ("select * from sessions where token = $1 and user_id = $2",
                 "UPDATE users SET password = ? WHERE id = ?", "where api_key = %s", "password=%(pw)s",
                 "where token = :token_1)", "token=?&page=2",
                 "WHERE (token = $1)", "password = :password", "f(token=$1)."):  # fmt: skip
        assert redactor.redact(text) == text
    # A value that merely begins like one is a value; ":name" right after "=" may be a password in a query string.
    for text in ("password=?abc", "token=$1abc", "password=:hunter2x", "token=%s3cr3t", "password=?)LEAK&x=1",
                 "password=$1)LEAK", "token=%s)LEAK", "password = :hunter2"):  # fmt: skip
        assert "[REDACTED:secret" in redactor.redact(text), text


def test_a_header_logged_as_a_name_value_pair_is_redacted(redactor: Redactor) -> None:
    # Session 27 left these in the clear: Python's list of header tuples, ASGI's scope["headers"], JSON's pairs;
    # a review of the first fix found the pretty-printed, spaced, trailing-comma, list, rawHeaders and HAR shapes.
    for text in ("headers=[('Authorization', 'Bearer opaqueLEAK'), ('Host', 'billing')]",
                 "scope={'headers': [(b'authorization', b'Basic LEAKdXNlcjpwYXNz')]}",
                 '{"headers": [["authorization", "Bearer opaqueLEAK"], ["accept", "*/*"]]}',
                 '{"msg": "[[\\"Proxy-Authorization\\", \\"Bearer opaqueLEAK\\"]]"}',
                 "[('Cookie', 'sid=LEAK42'), ('Set-Cookie', 'sid=LEAK43; HttpOnly')]",
                 '[( "Authorization" , "Bearer opaqueLEAK" )]',
                 '[\n  [\n    "authorization",\n    "Bearer opaqueLEAK"\n  ]\n]',
                 "[(\t'Authorization', 'Bearer opaqueLEAK',)]",
                 '[["authorization", ["Bearer opaqueLEAK", "Basic LEAK2"]]]', '[["cookie", ["sid=LEAK"]]]',
                 "[ 'Host', 'billing', 'Authorization', 'Bearer opaqueLEAK', 'Accept', '*/*' ]",
                 '{"name": "Authorization", "value": "Bearer opaqueLEAK"}',
                 # a second review: a bytes-keyed dict, WSGI's environ, Ruby's hash, an opaque 16-character token
                 "{b'authorization': b'Bearer opaqueLEAK'}", "{'HTTP_AUTHORIZATION': 'Bearer opaqueLEAK'}",
                 "{'HTTP_COOKIE': 'sid=LEAK'}", '{"Authorization"=>"Bearer opaqueLEAK"}', '{"password"=>"LEAK"}',
                 "('authorization', 'abcdefghijklmnopLEAK')"):  # fmt: skip
        out = redactor.redact(text)
        assert "LEAK" not in out, out
        assert redactor.redact(out) == out
    assert "('Host', 'billing')" in redactor.redact("[('Authorization', 'Bearer x'), ('Host', 'billing')]")
    # A JSON object's key after the name is no pair, nor a value that does not look like a credential (a
    # payments log's card authorization: the second review found "declined" hidden); a quoted header line is
    # redacted as before.
    for text in ('{"event": "authorization", "result": "denied"}', '{"name": "authorization", "type": "header"}',
                 "result=('authorization', 'declined')", "WHERE kind IN ('authorization', 'capture')",
                 'expected one of: "authorization", "capture"', '["cookie", "policy"]'):  # fmt: skip
        assert redactor.redact(text) == text
    assert "LEAK" not in redactor.redact('log("Authorization: Bearer opaqueLEAK")')


def test_a_header_list_of_many_values_costs_one_marker_past_the_first_few() -> None:
    import time

    from ingest.redact_patterns import MAX_LIST_CREDENTIALS

    redactor = Redactor(hash_key=KEY)
    text = 'Authorization: ["Bearer a", ' + '"Bearer opaqueLEAK", ' * 100_000 + '"x"]'
    started = time.process_time()
    out = redactor.redact(text)
    assert time.process_time() - started < 0.5  # a marker (an HMAC) each cost 0.5 s for these
    assert "LEAK" not in out and out.count("[REDACTED:authorization") == MAX_LIST_CREDENTIALS + 1
    assert " withheld=" in out


def test_an_empty_hash_key_is_refused_not_replaced_by_a_random_one() -> None:
    # A newcomer's trial: hash_key: "" (an empty template value) loaded, and each process hashed with its own key.
    from gatewatch.config import parse_config
    from gatewatch.errors import ConfigError

    with pytest.raises(ConfigError, match="redact.hash_key is empty"):
        parse_config({"redact": {"hash_key": ""}})


def test_a_marker_never_gives_away_the_seal_of_a_record_origin(monkeypatch: pytest.MonkeyPatch) -> None:
    # A review: the seal's key was the hash key itself; with hash_hex_chars 32 a client writing
    # password=<the sealed text> had gatewatch print the seal of an origin of its choosing.
    from gatewatch.config import parse_config
    from ingest.redact_key import origin_key, resolve_hash_key

    monkeypatch.setenv("GATEWATCH_REDACT_KEY", "k")
    redact = parse_config({}).redact
    assert resolve_hash_key(redact) == b"k" and origin_key(redact) not in (None, b"k")


@pytest.mark.parametrize(
    "text",
    [
        # A review: a scheme outside the built-in list was taken for the credential, and the token kept.
        "Authorization: SSWS 00SECRETokta",
        "Authorization: Splunk SECRET9-abcd",
        "Authorization: GenieKey SECRET15",
        "Authorization: AWS4-HMAC-SHA256 Credential=AKIASECRET/2026/s3, SignedHeaders=host;x-amz-date, "
        "Signature=SECRET10",
        'Authorization: Digest username="bob", realm="x", response="SECRET13"',
        # ... and values of lists and containers the patterns stopped short of.
        "map[Authorization:[SECRET8 SECRET9]]",
        '{"Authorization":[["Bearer SECRET39"]]}',
        '{"Authorization": ["Bearer a", 123, "Bearer SECRET38"]}',
        "{'password': {'a': '}', 'b': 'SECRET64'}, 'u': 1}",
        '{\\"password\\": {\\"a\\": \\"}\\", \\"b\\": \\"SECRET62\\"}}',
    ],
)
def test_credentials_in_every_authorization_shape_are_redacted(redactor: Redactor, text: str) -> None:
    out = redactor.redact(text)
    assert "SECRET" not in out, out
    assert redactor.redact(out) == out


def test_a_secret_container_pretty_printed_over_several_lines_is_redacted(redactor: Redactor) -> None:
    # A second review: json.dumps(..., indent=2) leaves "{" or "[" alone on the key's line, and only it was taken.
    values = ({"Cookie": ["sid=LEAK1"]}, {"password": {"old": "LEAK2", "new": "LEAK3"}}, [["cookie", ["sid=LEAK4"]]])
    for value in values:
        out = redactor.redact(json.dumps(value, indent=2))
        assert "LEAK" not in out, out
        assert redactor.redact(out) == out
