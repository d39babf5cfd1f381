"""SFT on a rejection-sampling run's output (R1 stage 3's fine-tune).

    python -m launch.train --config=configs/rejection_sft.py:VARIANT,REJECTION_DIR --workdir=DIR

REJECTION_DIR is a launch/rejection_sample.py workdir: its accepted.jsonl (chat records) is the
training set, prepared once into REJECTION_DIR/prepared (so two runs never share a stale copy).
R1 fine-tunes the base model on the mix, not the RL checkpoint: model.path is the base model;
to start from the RL checkpoint instead, export it with launch/convert.py and set
--config.model.path. The held-out accuracy is measured afterwards with launch/evaluate.py (the
trainers' own evaluation needs questions, which chat records do not have).

Variants: cpu (default; SmolLM2-135M-Instruct, after configs/rejection_sampling.py's default),
tiny (random 2-layer model), qwen2_5_7b (after its :qwen2_5_7b variant).
"""
import os

from configs import cold_start_sft, common


def get_config(arg: str = "") -> object:
    variant, _, rejection_dir = arg.partition(",")
    variant = common.variant_name(variant, {"cpu", "tiny", "qwen2_5_7b"}, stage="rejection_sft")
    rejection_dir = rejection_dir or "workdirs/rejection"
    config = cold_start_sft.get_config("qwen2_5_1_5b" if variant == "qwen2_5_7b" else variant)
    config.data.update(kind="chat", name="accepted", input=os.path.join(rejection_dir, "accepted.jsonl"),
                       data_dir=os.path.join(rejection_dir, "prepared"), template="chat",
                       test_fraction=0.02)
    config.data.generate = {}  # update() would merge into the variant's generator flags
    config.sft.train_on = "assistant"
    config.eval.max_problems = 0
    if variant == "cpu":
        # About one epoch over the default run's mix (~400 short addition replies, ~130 general
        # ones cut at 256 tokens), at the R1-Zero default's learning rate.
        config.sft.update(seq_len=256, batch_size=4, eval_rows=0)  # accuracy: launch/evaluate.py
        config.optimizer.update(learning_rate=2e-5, warmup_steps=3, decay="cosine")
        config.train.update(num_steps=40, eval_every=20, checkpoint_every=20)
    elif variant == "tiny":  # A handful of rows: nothing to hold out.
        config.data.test_fraction = 0.0
        config.sft.update(eval_rows=0, batch_size=2)
    elif variant == "qwen2_5_7b":
        config.model.update(path="/path/to/qwen2_5_7b_base")
        config.sft.update(seq_len=32768, batch_size=128, num_micro_batches=16)
        config.train.update(num_steps=2 * 800_000 // 128, eval_every=500, checkpoint_every=500)
        config.mesh.shape = {"data": 4, "fsdp": 8, "tensor": 1}
    config.variant = f"rejection_sft_{variant}"
    return config
