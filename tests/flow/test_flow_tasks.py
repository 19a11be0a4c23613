"""Tasks: the embedded arithmetic task, JSONL instruction data, encoding with the prompt masked, answers."""

import json

import pytest

import flow
from flow.tasks import ALPACA_PROMPT, collate, token_rows


def test_arithmetic_is_deterministic_disjoint_and_correct():
    train, test = flow.arithmetic_split(300, 50, seed=3)
    assert (train, test) == flow.arithmetic_split(300, 50, seed=3)
    assert train != flow.arithmetic_split(300, 50, seed=4)[0]
    assert not {e.prompt for e in train} & {e.prompt for e in test}
    for e in train[:20]:
        a, b = e.prompt[:-1].split("+")
        assert e.answer == e.response == str(int(a) + int(b))
    with pytest.raises(ValueError, match="distinct"):
        flow.arithmetic(101, seed=0, max_operand=9)


def test_encoding_supervises_only_the_response_and_eos():
    tok = flow.ByteTokens()
    enc = flow.encode(flow.Example("12+34=", "46", "46"), tok, max_len=64)
    assert tok.decode(enc.ids) == "12+34=46\n"
    assert enc.mask == [0] * 6 + [1, 1, 1]
    short = flow.encode(flow.Example("12+34=", "46", "46"), tok, max_len=7)
    assert short.ids == enc.ids[:7] and short.mask == enc.mask[:7]
    ids, mask = collate([enc, short], pad_id=0)
    assert ids.shape == (2, 9) and mask[1].tolist() == [0] * 6 + [1, 0, 0]


def test_final_answer_formats():
    assert flow.final_answer("so 3 + 4 = 7\n#### 1,000") == "1000"
    assert flow.final_answer("... The answer is: 42.0") == "42"
    assert flow.final_answer("we get 5 then 17") == "17"


def test_jsonl_loader_with_template_and_answers(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [{"q": "What is 2+2?", "a": "2+2 is 4.\n#### 4"}, {"q": "Half of 10?", "a": "The answer is: 5"}]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    ex = flow.load_jsonl(path, prompt_key="q", response_key="a", template=ALPACA_PROMPT)
    assert [e.answer for e in ex] == ["4", "5"]
    assert ex[0].prompt.startswith("Below is an instruction") and "What is 2+2?" in ex[0].prompt
    with pytest.raises(KeyError, match="'question'"):
        flow.load_jsonl(path, prompt_key="question")


def test_token_rows_cut_fixed_rows():
    rows = token_rows(flow.ByteTokens(), ["abcdef", "ghij", "never read"], row_len=4, n_rows=2)
    assert rows.shape == (2, 4) and flow.ByteTokens().decode(rows.flatten().tolist()) == "abcdef\ng"
    with pytest.raises(ValueError, match="fewer than one row"):
        token_rows(flow.ByteTokens(), ["ab"], row_len=4, n_rows=1)
