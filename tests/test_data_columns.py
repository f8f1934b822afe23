"""Any dataset's columns (launcher.validate.columns, launcher.train.data): a prompt template built from
columns, a system prompt, the reward functions' columns mapped, a weighted mixture; the check before
queueing for a local file, naming the key and the columns the file has, and the same check in the job."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from conftest import compose
from launcher.plan.build import build_plan
from launcher.validate.columns import file_columns
from launcher.validate.problems import InvalidConfig


@pytest.fixture
def qa_file(tmp_path):
    path = tmp_path / "qa.jsonl"
    path.write_text("".join(json.dumps({"question": f"{i}+1?", "answer": str(i + 1), "level": i % 3}) + "\n"
                            for i in range(20)))
    return path


def _plan(tiny_model, data, *overrides):
    return build_plan(compose(f"model.name_or_path={tiny_model}", f"data.name_or_path={data}", "cluster=local",
                              "mode=colocate", *overrides))


def _problems(tiny_model, data, *overrides) -> str:
    with pytest.raises(InvalidConfig) as error:
        _plan(tiny_model, data, *overrides)
    return str(error.value)


def test_template_and_reward_mapping_give_trl_its_prompt_and_solution(tiny_model, qa_file):
    from launcher.train.data import load_train_dataset

    plan = _plan(tiny_model, qa_file, "data.prompt_template='Solve: {question}'", "+data.reward_columns.solution=answer")
    ds = load_train_dataset(plan.data, plan.reward.funcs)
    assert ds[3]["prompt"] == "Solve: 3+1?" and ds[3]["solution"] == "4"
    assert ds[3]["answer"] == "4" and ds[3]["level"] == 0  # the other columns still reach the rewards
    with_system = _plan(tiny_model, qa_file, "data.prompt_template='Solve: {question}'", "data.system_prompt=Be brief.",
                        "+data.reward_columns.solution=answer")
    assert load_train_dataset(with_system.data, with_system.reward.funcs)[0]["prompt"] == [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Solve: 0+1?"}]


def test_prompt_column_is_used_as_the_prompt(tiny_model, qa_file):
    from launcher.train.data import load_train_dataset

    plan = _plan(tiny_model, qa_file, "data.prompt_column=question", "+data.reward_columns.solution=answer")
    assert load_train_dataset(plan.data, plan.reward.funcs)[5]["prompt"] == "5+1?"


def test_a_missing_column_is_refused_before_queueing_naming_key_and_columns(tiny_model, qa_file):
    text = _problems(tiny_model, qa_file, "data.prompt_template='Solve: {problem}'", "+data.reward_columns.solution=answer")
    assert "data.prompt_template" in text and "'problem'" in text and "question, answer, level" in text
    # TRL's accuracy_reward (the default reward) needs `solution`: unmapped, the file has none
    text = _problems(tiny_model, qa_file, "data.prompt_column=question")
    assert "reward.funcs" in text and "'solution'" in text and "data.reward_columns.solution" in text
    text = _problems(tiny_model, qa_file, "data.prompt_column=question", "+data.reward_columns.solution=answr")
    assert "data.reward_columns.solution" in text and "'answr'" in text
    assert "data.prompt_template" in _problems(tiny_model, qa_file, "data.prompt_template='Solve: {0}'")


def test_csv_header_and_json_array_are_read_without_datasets(tmp_path):
    csv_file = tmp_path / "d.csv"
    csv_file.write_text("question,answer\n1+1?,2\n")
    assert file_columns(csv_file) == ["question", "answer"]
    array = tmp_path / "d.json"
    array.write_text(json.dumps([{"prompt": "a"}, {"prompt": "b", "solution": "c"}]))
    assert file_columns(array) == ["prompt", "solution"]


def test_parquet_columns_come_from_its_footer_without_pyarrow(tiny_model, tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"question": ["a"], "answer": ["1"], "prompt": [[{"role": "user", "content": "x"}]],
                             "meta": [{"k": 1.5}]}), path)
    assert file_columns(path) == ["question", "answer", "prompt", "meta"]  # nested columns: top level only
    text = _problems(tiny_model, path, "data.prompt_column=query", "+data.reward_columns.solution=answer")
    assert "data.prompt_column" in text and "'query'" in text and "question, answer, prompt, meta" in text
    # counter-test: a file that is not parquet is left to the job (no column list from it)
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(path.read_bytes()[:-9] + b"XPAR1")
    assert file_columns(broken) is None


def test_the_job_names_a_missing_column_of_a_dataset_checked_there(tiny_model, tmp_path, qa_file):
    """A dataset folder (like a hub dataset) is checked when the trainer loads it: JobError, exit 2."""
    from datasets import load_dataset

    from launcher.train.data import load_train_dataset
    from launcher.train.errors import JobError

    folder = tmp_path / "saved"
    load_dataset("json", data_files=str(qa_file), split="train").save_to_disk(str(folder))
    plan = _plan(tiny_model, folder, "data.prompt_column=query", "+data.reward_columns.solution=answer")  # passes
    with pytest.raises(JobError, match=r"data.prompt_column: the dataset .* has no column 'query' \(its columns: "
                                       r"question, answer, level\)"):
        load_train_dataset(plan.data, plan.reward.funcs)


def test_mixture_draws_rows_in_proportion_to_the_weights_with_a_seed(tiny_model, tmp_path):
    from launcher.train.data import load_train_dataset

    files = []
    for name in ("a", "b"):
        path = tmp_path / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"prompt": f"{name}{i}", "solution": name}) + "\n" for i in range(1000)))
        files.append(path)
    mixture = f"data.mixture=[{{name_or_path:'{files[0]}',weight:0.7}},{{name_or_path:'{files[1]}',weight:0.3}}]"
    plan = build_plan(compose(f"model.name_or_path={tiny_model}", "cluster=local", "mode=colocate", mixture,
                              "data.seed=3"))
    assert plan.data.name_or_path == str(files[0]) and [s["weight"] for s in plan.data.sources()] == [0.7, 0.3]
    ds = load_train_dataset(plan.data, plan.reward.funcs)
    share = Counter(ds["solution"])["a"] / len(ds)
    assert 0.66 < share < 0.74, share
    again = load_train_dataset(plan.data, plan.reward.funcs)
    assert again["prompt"][:50] == ds["prompt"][:50]  # same seed, same order
    other = build_plan(compose(f"model.name_or_path={tiny_model}", "cluster=local", "mode=colocate", mixture,
                               "data.seed=4"))
    assert load_train_dataset(other.data, other.reward.funcs)["prompt"][:50] != ds["prompt"][:50]
    # counter-test: equal weights draw about half from each
    even = build_plan(compose(f"model.name_or_path={tiny_model}", "cluster=local", "mode=colocate",
                              mixture.replace("0.7", "0.5").replace("0.3", "0.5")))
    rows = load_train_dataset(even.data, even.reward.funcs)["solution"]
    assert 0.45 < Counter(rows)["a"] / len(rows) < 0.55


def test_no_dataset_at_all_is_refused_naming_the_key(tiny_model):
    with pytest.raises(InvalidConfig, match="data.name_or_path: is required"):
        build_plan(compose(f"model.name_or_path={tiny_model}", "cluster=local", "mode=colocate",
                           "data.name_or_path=null"))


def test_a_mixture_stages_each_hub_dataset_naming_its_entry(tiny_model, qa_file):
    from launcher.plan.hub_repos import hub_repos

    plan = build_plan(compose(f"model.name_or_path={tiny_model}", "cluster=local", "mode=colocate",
                              f"data.mixture=[{{name_or_path:'{qa_file}'}},{{name_or_path:acme/math,revision:v2}}]",
                              "data.prompt_column=question", "+data.reward_columns.solution=answer"))
    assert [(r.repo_id, r.revision, r.key) for r in hub_repos(plan)] == [("acme/math", "v2", "data.mixture[1].name_or_path")]
