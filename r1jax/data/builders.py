"""tensorflow-datasets builders for r1jax's record kinds, written and read as array_record.

array_record needs no TensorFlow: tfds writes it with numpy encoders, and `as_data_source` reads
it back with random access, which is what the pipeline's shuffling and resumption need.

On disk a prepared data set is `DATA_DIR/NAME/1.0.0/` (dataset_info.json, features.json and one
array_record file per split). The data set's name is the user's `--name`, not the kind: tfds names
a data set after its builder class, so `prepare` makes a one-off subclass of the kind's builder
called NAME (kept out of tfds' global registry), and `load` reads the directory back with
`tfds.builder_from_directory`, which needs no builder code at all.

A build is atomic: it is written into `DATA_DIR/.NAME.incomplete-XXXX/` and renamed into place only
once complete, so a failed build (a bad line, a full disk) leaves nothing a trainer would read. The
rename is atomic on a local file system (what the tests check); elsewhere it may not be,
so prepare locally and copy the finished NAME/ directory. Prepare from one process, not from every
host of a pod.
"""
import json
import re
import uuid
from collections.abc import Mapping, Sequence

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from r1jax.data import generated, jsonl

VERSION = "1.0.0"
# The name becomes a directory and the prefix of tfds' file names ("NAME-train.array_record-...").
_NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*")


def _text() -> tfds.features.Text:
    return tfds.features.Text()


class RecordsBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Writes records that were already read and validated in Python, one split per list.

    Subclasses set FEATURES (a function returning the tfds feature dict) and DESCRIPTION.
    Records are written in the order given (`disable_shuffling`), so record i of a split is
    line i of the user's file; the pipeline does the shuffling, reproducibly, at read time.
    """

    VERSION = tfds.core.Version(VERSION)
    DESCRIPTION = ""

    def __init__(self, *, splits: Mapping[str, Sequence[dict]], **kwargs):
        """splits: split name -> records (dicts matching FEATURES). kwargs go to tfds (data_dir)."""
        self._records = splits
        super().__init__(**kwargs)

    @staticmethod
    def features() -> dict:
        raise NotImplementedError

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, description=self.DESCRIPTION,
                                     features=tfds.features.FeaturesDict(self.features()),
                                     disable_shuffling=True)

    def _split_generators(self, dl_manager):
        return {split: self._generate_examples(records) for split, records in self._records.items()}

    def _generate_examples(self, records):
        # Keys are positions, not ids: user ids need not be unique.
        for i, record in enumerate(records):
            yield i, _stored_form(record)

    # tfds prints "downloading ... to <dir>" with the staging directory, which is not where the
    # data set ends up; `prepare`'s caller reports the real place.
    def _log_download_bytes(self) -> None:
        pass

    def _log_download_done(self) -> None:
        pass


class MathBuilder(RecordsBuilder, skip_registration=True):
    """Math questions with a final answer (GSM8K, MATH, plain Q&A, arithmetic)."""

    DESCRIPTION = "r1jax math records: id, question, answer (final answer only), solution."

    @staticmethod
    def features() -> dict:
        return {"id": _text(), "question": _text(), "answer": _text(), "solution": _text()}


class CountdownBuilder(RecordsBuilder, skip_registration=True):
    """Countdown puzzles: math records plus the numbers and the target."""

    DESCRIPTION = "r1jax countdown records: math fields plus numbers (list of int) and target (int)."

    @staticmethod
    def features() -> dict:
        return {**MathBuilder.features(), "numbers": tfds.features.Sequence(np.int64), "target": np.int64}


class CodeBuilder(RecordsBuilder, skip_registration=True):
    """Code problems with tests."""

    DESCRIPTION = "r1jax code records: id, prompt, tests (list of str)."

    @staticmethod
    def features() -> dict:
        return {"id": _text(), "prompt": _text(), "tests": tfds.features.Sequence(_text())}


class ChatBuilder(RecordsBuilder, skip_registration=True):
    """Chat logs; the message list is stored as JSON text (read back as "messages")."""

    DESCRIPTION = "r1jax chat records: id, messages_json (JSON list of {role, content})."

    @staticmethod
    def features() -> dict:
        return {"id": _text(), "messages_json": _text()}


class PreferenceBuilder(RecordsBuilder, skip_registration=True):
    """Preference pairs: a prompt and a chosen and a rejected reply."""

    DESCRIPTION = "r1jax preference records: id, prompt, chosen, rejected."

    @staticmethod
    def features() -> dict:
        return {"id": _text(), "prompt": _text(), "chosen": _text(), "rejected": _text()}


class CompletionBuilder(RecordsBuilder, skip_registration=True):
    """Prompt/completion pairs for SFT (a teacher's traces, rejection samples)."""

    DESCRIPTION = "r1jax completion records: id, prompt, completion."

    @staticmethod
    def features() -> dict:
        return {"id": _text(), "prompt": _text(), "completion": _text()}


BUILDERS: dict[str, type[RecordsBuilder]] = {
    "math": MathBuilder,
    "arithmetic": MathBuilder,
    "countdown": CountdownBuilder,
    "code": CodeBuilder,
    "chat": ChatBuilder,
    "completion": CompletionBuilder,
    "preference": PreferenceBuilder,
}
KINDS = tuple(BUILDERS)


def _stored_form(record: dict) -> dict:
    """A Python record -> what the builder writes (chat messages become JSON text)."""
    if "messages" not in record:
        return record
    stored = {k: v for k, v in record.items() if k != "messages"}
    stored["messages_json"] = json.dumps(record["messages"], ensure_ascii=False)
    return stored


def _python_value(value):
    """A decoded tfds value -> plain Python (bytes -> str, numpy -> int/list)."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_python_value(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    return value


def _python_form(example: dict) -> dict:
    """A decoded example -> the Python record (the inverse of `_stored_form`)."""
    record = {key: _python_value(value) for key, value in example.items()}
    if "messages_json" in record:
        record["messages"] = json.loads(record.pop("messages_json"))
    return record


def _split_off_test(records: list[dict], test_fraction: float, seed: int) -> dict[str, list[dict]]:
    """Moves a seeded random `test_fraction` of records into "test"; both keep file order."""
    num_test = round(len(records) * test_fraction)
    if not 0 < num_test < len(records):
        raise ValueError(f"test_fraction={test_fraction} of {len(records)} records leaves an empty split")
    is_test = np.zeros(len(records), dtype=bool)
    is_test[np.random.default_rng(seed).permutation(len(records))[:num_test]] = True
    return {"train": [r for r, t in zip(records, is_test) if not t],
            "test": [r for r, t in zip(records, is_test) if t]}


def read_splits(kind: str, input_path: str | None = None, *, test_input: str | None = None,
                test_fraction: float = 0.0, split_seed: int = 0, **gen_kwargs) -> dict[str, list[dict]]:
    """Reads (user kinds) or generates (arithmetic, countdown) the records of every split.

    Args:
      kind: one of KINDS.
      input_path: the user's JSONL file (user kinds only); it becomes "train".
      test_input: optional JSONL file for "test".
      test_fraction: alternatively, the fraction of input_path moved to "test" (seeded by split_seed).
      split_seed: the seed of that split.
      **gen_kwargs: generated kinds only: num_train, num_test, seed and the task's knobs.

    Returns:
      {split: records}, every record validated.
    """
    if kind in generated.TASKS:
        if input_path or test_input or test_fraction:
            raise ValueError(f"{kind!r} is generated: it takes no input file or test_fraction")
        return generated.generate_splits(kind, **gen_kwargs)
    if kind not in jsonl.PARSERS:
        raise ValueError(f"unknown kind {kind!r}; known: {KINDS}")
    if gen_kwargs:
        raise ValueError(f"{kind!r} is read from a file; unexpected arguments {sorted(gen_kwargs)}")
    if not input_path:
        raise ValueError(f"{kind!r} needs an input file")
    if test_input and test_fraction:
        raise ValueError("give test_input or test_fraction, not both")
    train = jsonl.read_records(input_path, kind)
    if test_input:
        return {"train": train, "test": jsonl.read_records(test_input, kind)}
    if test_fraction:
        return _split_off_test(train, test_fraction, split_seed)
    return {"train": train}


def prepare(kind: str, input_path: str | None = None, *, name: str, data_dir: str, overwrite: bool = False,
            test_input: str | None = None, test_fraction: float = 0.0, split_seed: int = 0,
            **gen_kwargs) -> dict[str, int]:
    """Builds data set NAME under DATA_DIR, atomically (see the module docstring).

    Args:
      kind: "math", "code", "chat", "preference" (from input_path) or "arithmetic", "countdown".
      input_path, test_input, test_fraction, split_seed, **gen_kwargs: see `read_splits`.
      name: the data set's name: lower case letters, digits, underscores, starting with a letter.
      data_dir: the directory holding prepared data sets.
      overwrite: replace an existing NAME (swapped in only after the new one is complete).

    Returns:
      {split: number of examples}.

    Raises:
      ValueError: bad arguments or a bad input line ("FILE:LINE: problem").
      FileExistsError: NAME exists and overwrite is False.
    """
    if not _NAME_PATTERN.fullmatch(name):
        raise ValueError(f"data set name {name!r} must match {_NAME_PATTERN.pattern}")
    root = epath.Path(data_dir).expanduser()
    final = root / name
    if final.exists() and not overwrite:
        raise FileExistsError(f"data set {name!r} already exists in {data_dir}; pass overwrite=True (--overwrite)")
    # Everything is read and checked before anything is written.
    splits = read_splits(kind, input_path, test_input=test_input, test_fraction=test_fraction,
                         split_seed=split_seed, **gen_kwargs)
    splits = {split: records for split, records in splits.items() if records}  # e.g. num_test=0.
    staging = root / f".{name}.incomplete-{uuid.uuid4().hex[:8]}"
    try:
        builder_cls = type(name, (BUILDERS[kind],), {"name": name, "__module__": __name__}, skip_registration=True)
        builder = builder_cls(splits=splits, data_dir=str(staging))
        tfds.disable_progress_bar()  # Its bars name the staging dir; the caller prints counts.
        try:
            builder.download_and_prepare(file_format="array_record")
        finally:
            tfds.enable_progress_bar()
        counts = {split: info.num_examples for split, info in builder.info.splits.items()}
        _swap_in(staging / name, final, aside=staging / "previous")
    finally:
        if staging.exists():
            staging.rmtree()
    return counts


def _swap_in(new: epath.Path, final: epath.Path, aside: epath.Path) -> None:
    """Renames `new` to `final`; an existing `final` is moved to `aside` first, and put back if that fails."""
    if final.exists():
        final.rename(aside)
    try:
        new.rename(final)
    except BaseException:
        if aside.exists():
            aside.rename(final)
        raise


class RecordSource(Sequence):
    """Random access to one split of a prepared data set, as plain Python records.

    len(source), source[i] (0 <= i < len, or negative), source[a:b] (a list) and list(source);
    records are dicts of str, int and lists (chat records have "messages", a list of
    {"role", "content"}).
    """

    def __init__(self, data_source, name: str, split: str):
        self._data_source = data_source
        self.name, self.split = name, split

    def __len__(self) -> int:
        return len(self._data_source)

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        index = int(index)
        if not -len(self) <= index < len(self):  # IndexError also ends Sequence iteration.
            raise IndexError(f"index {index} out of range for {self.name}/{self.split} of {len(self)} records")
        return _python_form(self._data_source[index % len(self)])

    def __repr__(self) -> str:
        return f"RecordSource({self.name!r}, split={self.split!r}, len={len(self)})"


def list_datasets(data_dir: str) -> list[str]:
    """Names of the prepared data sets in data_dir (complete ones only)."""
    root = epath.Path(data_dir).expanduser()
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and (p / VERSION / "dataset_info.json").exists())


def load(name: str, data_dir: str, split: str) -> RecordSource:
    """Opens one split of a prepared data set.

    Args:
      name: the data set's name (as given to `prepare` / --name).
      data_dir: the directory holding prepared data sets.
      split: "train", "test", ...

    Returns:
      RecordSource: len() and [i] -> dict.

    Raises:
      FileNotFoundError: no such data set (the message lists those that exist).
      ValueError: no such split (the message lists the splits).
    """
    builder_dir = epath.Path(data_dir).expanduser() / name / VERSION
    if not (builder_dir / "dataset_info.json").exists():
        raise FileNotFoundError(f"no prepared data set {name!r} in {data_dir}; found: {list_datasets(data_dir)}. "
                                "Prepare it with: python -m launch.data --kind=... --name=... --data_dir=...")
    builder = tfds.builder_from_directory(str(builder_dir))
    if split not in builder.info.splits:
        raise ValueError(f"data set {name!r} has no split {split!r}; splits: {sorted(builder.info.splits)}")
    return RecordSource(builder.as_data_source(split), name, split)
