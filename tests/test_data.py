"""Data loading and the labeled / unlabeled split, on tiny hand-made files and the bundled SST-5."""

import json

import numpy as np
import pandas as pd
import pytest

from raysweep.config import DataConfig, SplitConfig
from raysweep.data import DataError, load_dataset, load_splits, read_table, split_labeled

ROWS = [("train", "good film", 3), ("train", "bad film", 1), ("dev", "fine", 2), ("train", "awful", 0)]


def test_bundled_sst5_is_complete():
    train, val, source = load_dataset(DataConfig())
    assert source == "bundled SST-5"
    assert len(train) == 8544 and len(val) == 1101
    assert np.bincount(train["label"]).tolist() == [1092, 2218, 1624, 2322, 1288]
    assert np.bincount(val["label"]).tolist() == [139, 289, 229, 279, 165]


def test_bundled_split_is_one_to_four_and_stratified():
    splits = load_splits(DataConfig(), SplitConfig())
    assert len(splits.labeled) == 1709 and len(splits.unlabeled) == 6835
    assert np.bincount(splits.train["label"].to_numpy()[splits.labeled]).tolist() == [218, 444, 325, 464, 258]
    assert len(np.intersect1d(splits.labeled, splits.unlabeled)) == 0


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet", ".csv.gz"])
def test_any_format_with_custom_columns(tmp_path, suffix):
    df = pd.DataFrame(ROWS, columns=["part", "sentence", "stars"])
    path = tmp_path / f"data{suffix}"
    if suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in df.to_dict("records")))
    elif suffix == ".parquet":
        df.to_parquet(path)
    else:
        df.to_csv(path, index=False)
    cfg = DataConfig(path=str(path), text_column="sentence", label_column="stars", split_column="part")
    train, val, _ = load_dataset(cfg)
    assert train["text"].tolist() == ["good film", "bad film", "awful"]
    assert train["label"].tolist() == [3, 1, 0]
    assert val["text"].tolist() == ["fine"]


def _csv(tmp_path, text):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


@pytest.mark.parametrize("body, message", [
    ("split,text\ntrain,x\n", "missing column 'label'"),
    ("split,text,label\ntrain,x,1\ntrain,y,7\n", "row 3: label '7' is outside 0..4"),
    ("split,text,label\ntrain,x,1\ntrain,  ,2\n", "row 3: empty text in column 'text'"),
    ("split,text,label\ntrain,x,one\n", "row 2: label 'one' is not a number"),
    ("split,text,label\ntrain,x,1.5\n", "row 2: label '1.5' is not a whole number"),
    ("split,text,label\nholdout,x,1\n", "row 2: split 'holdout' is not 'train', 'dev' or 'test'"),
    ("split,text,label\ntest,x,1\n", "needs both 'train' and 'dev' rows"),
    ("split,text,label\ntrain,x,1\n", "needs both 'train' and 'dev' rows"),
])
def test_bad_rows_name_file_row_and_problem(tmp_path, body, message):
    path = _csv(tmp_path, body)
    with pytest.raises(DataError) as info:
        load_dataset(DataConfig(path=str(path)))
    assert message in str(info.value) and str(path) in str(info.value)


def test_file_that_is_not_what_its_suffix_says(tmp_path):
    fake = tmp_path / "data.parquet"
    fake.write_text("split,text,label\ntrain,x,1\n")
    with pytest.raises(DataError, match=r"data.parquet: not a readable Parquet file"):
        read_table(fake)
    fake_gz = tmp_path / "data.csv.gz"
    fake_gz.write_text("split,text,label\n")
    with pytest.raises(DataError, match=r"data.csv.gz: not a readable CSV file"):
        read_table(fake_gz)
    broken = tmp_path / "data.jsonl"
    broken.write_text('{"text": "a"}\n{"text": \n')
    with pytest.raises(DataError, match=r"data.jsonl: line 2: not valid JSON"):
        read_table(broken)
    with pytest.raises(DataError, match=r"unknown file type '.txt'"):
        (tmp_path / "x.txt").write_text("a")
        read_table(tmp_path / "x.txt")
    with pytest.raises(DataError, match=r"no such file"):
        read_table(tmp_path / "missing.csv")


def test_split_counts_exact():
    labels = np.array([0] * 10 + [1] * 5 + [2] * 5)
    labeled, unlabeled = split_labeled(labels, SplitConfig(labeled_fraction=0.2, stratify=True, seed=0))
    assert np.bincount(labels[labeled], minlength=3).tolist() == [2, 1, 1]
    assert len(unlabeled) == 16
    assert sorted(np.concatenate([labeled, unlabeled]).tolist()) == list(range(20))
    plain, _ = split_labeled(labels, SplitConfig(labeled_fraction=0.25, stratify=False, seed=0))
    assert len(plain) == 5


def test_split_is_seeded():
    labels = np.arange(100) % 5
    a, _ = split_labeled(labels, SplitConfig(seed=1))
    b, _ = split_labeled(labels, SplitConfig(seed=1))
    c, _ = split_labeled(labels, SplitConfig(seed=2))
    assert a.tolist() == b.tolist()
    assert a.tolist() != c.tolist()


def test_a_test_split_is_read_and_held_out(tmp_path):
    rows = ROWS + [("test", "held out", 4), ("TEST ", "also held out", 0)]
    path = tmp_path / "data.csv"
    pd.DataFrame(rows, columns=["split", "text", "label"]).to_csv(path, index=False)
    splits = load_splits(DataConfig(path=str(path)), SplitConfig(labeled_fraction=0.5, stratify=False))
    assert splits.test["text"].tolist() == ["held out", "also held out"]
    assert splits.test["label"].tolist() == [4, 0]
    assert len(splits.train) == 3 and splits.val["text"].tolist() == ["fine"]  # test rows are in neither
    assert splits.describe().endswith("val 1, test 2")
    assert load_splits(DataConfig(), SplitConfig()).test is None  # the bundled SST-5 has no test split

