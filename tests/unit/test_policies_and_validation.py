import math
from uuid import UUID, uuid4

import pytest
from hypothesis import given
from hypothesis import strategies as st

from commandbus.errors import PayloadTooLargeError, ValidationError
from commandbus.models import Reply, ReplyOutcome
from commandbus.policies import RetryPolicy
from commandbus.validation import (
    encode_payload,
    json_text,
    validate_command_type,
    validate_name,
    validate_queue_name,
    validate_uuid,
)


def test_backoff_follows_the_schedule_and_repeats_its_last_value():
    policy = RetryPolicy(max_attempts=5, backoff_schedule=(1, 2))
    assert [policy.backoff(n) for n in (1, 2, 3, 4)] == [1.0, 2.0, 2.0, 2.0]
    assert policy.should_retry(4) and not policy.should_retry(5)
    assert policy.should_retry(1, max_attempts=2) and not policy.should_retry(2, max_attempts=2)


def test_retry_policy_rejects_nonsense():
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    with pytest.raises(ValueError, match="negative"):
        RetryPolicy(backoff_schedule=(1, -1))


@pytest.mark.parametrize("name", ["payments", "a", "order_2", "x" * 63])
def test_valid_names(name):
    assert validate_name(name) == name


@pytest.mark.parametrize(
    "name", ["", "Payments", "1abc", "a-b", "a b", "x" * 64, "a__b", "a;drop table", None, 3]
)
def test_invalid_names_are_rejected_with_a_clear_message(name):
    with pytest.raises(ValidationError, match="invalid domain"):
        validate_name(name)


def test_queue_names_allow_one_double_underscore_suffix():
    assert validate_queue_name("reporting__process_replies") == "reporting__process_replies"
    for bad in ["a__b__c", "__x", "A__b", "a__", "x" * 64]:
        with pytest.raises(ValidationError):
            validate_queue_name(bad)


def test_command_types():
    assert validate_command_type("StatementQuery") == "StatementQuery"
    assert validate_command_type("billing.Charge-v2") == "billing.Charge-v2"
    for bad in ["", "1x", "a b", "x;y", "x" * 200]:
        with pytest.raises(ValidationError, match="invalid command type"):
            validate_command_type(bad)


def test_uuids():
    u = uuid4()
    assert validate_uuid(u) is u
    assert validate_uuid(str(u)) == u
    with pytest.raises(ValidationError, match="UUID"):
        validate_uuid("not-a-uuid")
    with pytest.raises(ValidationError, match="correlation_id"):
        validate_uuid(42, "correlation_id")


def test_payloads_must_be_json_objects_within_the_limit():
    assert encode_payload({"a": [1, 2]}) == '{"a":[1,2]}'
    with pytest.raises(ValidationError, match="JSON object"):
        encode_payload([1, 2])
    with pytest.raises(ValidationError, match="not JSON-serialisable"):
        encode_payload({"when": object()})
    with pytest.raises(ValidationError, match="not JSON-serialisable"):
        encode_payload({"x": math.nan})
    with pytest.raises(ValidationError, match="NUL"):
        encode_payload({"x": "a\x00b"})
    with pytest.raises(PayloadTooLargeError, match="limit is 100 bytes"):
        encode_payload({"x": "y" * 200}, max_bytes=100)
    circular: dict[str, object] = {}
    circular["self"] = circular
    with pytest.raises(ValidationError, match="not JSON-serialisable"):
        encode_payload(circular)


def test_json_text_is_json_dumps_compact():
    import json

    for value in ({"a": [1, 2.5, None, True, "é\n"], "b": {}}, {1: "k"}, [], "s", 3, None):
        assert json_text(value) == json.dumps(value, separators=(",", ":"), allow_nan=False)
    with pytest.raises(ValueError):
        json_text({"x": math.inf})
    with pytest.raises(TypeError):
        json_text({"x": object()})


def test_valid_names_are_remembered_but_invalid_ones_still_fail():
    for _ in range(2):
        assert validate_name("payments") == "payments"
        assert validate_queue_name("payments__replies") == "payments__replies"
        assert validate_command_type("Debit") == "Debit"
    for bad in ("Payments", "a__b", 3):
        with pytest.raises(ValidationError):
            validate_name(bad)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(alphabet=st.characters(blacklist_characters="\x00")),
    lambda children: (
        st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=10,
)


@given(
    outcome=st.sampled_from(list(ReplyOutcome)),
    data=st.none() | st.dictionaries(st.text(max_size=5), json_values, max_size=4),
    correlation=st.none() | st.uuids(),
    code=st.none() | st.text(max_size=10),
)
def test_reply_wire_format_round_trips(outcome, data, correlation, code):
    reply = Reply(
        command_id=uuid4(),
        correlation_id=correlation,
        outcome=outcome,
        data=data,
        error_code=code,
        error_message=None,
        domain="reporting",
        command_type="StatementQuery",
    )
    assert Reply.from_message(reply.to_message()) == reply


@pytest.mark.parametrize(
    "message",
    [
        {},
        {"command_id": "nope", "outcome": "SUCCESS"},
        {"command_id": str(UUID(int=1)), "outcome": "MAYBE"},
        {"command_id": str(UUID(int=1)), "outcome": "SUCCESS", "result": [1]},
        {"command_id": str(UUID(int=1)), "outcome": "SUCCESS", "correlation_id": "zzz"},
    ],
)
def test_malformed_reply_messages_raise_value_error(message):
    with pytest.raises(ValueError, match="malformed reply"):
        Reply.from_message(message)


def test_a_success_replys_result_is_typed_and_other_outcomes_have_none() -> None:
    from uuid import uuid4

    from commandbus.errors import InvalidOperationError
    from commandbus.models import Reply, ReplyOutcome

    done = Reply(uuid4(), None, ReplyOutcome.SUCCESS, {"receipt": "R-1"})
    assert done.result == {"receipt": "R-1"}
    assert Reply(uuid4(), None, ReplyOutcome.SUCCESS).result == {}  # the handler returned None
    refused = Reply(uuid4(), None, ReplyOutcome.FAILED, error_code="NO", error_message="no")
    with pytest.raises(InvalidOperationError, match="FAILED reply has no result"):
        refused.result  # noqa: B018
