"""The original tensorflow/tcav package (``tcav`` 0.2.2 on PyPI) on a workload, TensorFlow CPU.

Peer implementation; runs in its own virtual environment (``bench/.venv-tf``, see
bench/README.md) and imports neither PyTorch nor tcavkit. The workload's network is rebuilt
as a TensorFlow graph (``tf.compat.v1``, graph mode) from ``model.npz`` with the same
weights, and wrapped in a ``tcav.model.ImageModelWrapper`` subclass the way tcav's own
wrappers and its walkthrough notebook (Run_TCAV.ipynb) do: ``bottlenecks_tensors`` (the
workload's layers, e.g. the pooled outputs of ``block2``/``block3``), ``ends``,
``y_input``, ``loss`` and ``_make_gradient_tensors()``. Then tcav's standard flow, per
target: ``ImageActivationGenerator`` over the workload's data folder (tensorflow/tcav's
layout), ``tcav.TCAV(sess, target, concepts, bottlenecks, act_gen, alphas=[0.1],
cav_dir=..., num_random_exp=runs)`` and ``run(run_parallel=False)``, as in the walkthrough
(no ``random_counterpart``: every concept is trained against ``random500_0`` ..
``random500_{runs-1}`` and, for the statistical test, every ordered pair of those random
sets as well). The scores of the concept-vs-random runs are aggregated into mean/std/n per
(target, concept, bottleneck), as ``utils.print_results`` does.

Loss (``--loss``): ``xent`` (default, as tcav's wrappers and walkthrough): softmax cross
entropy of the logits with the target class; tcav counts an example when the loss gradient
has a negative dot product with the CAV, i.e. when the directional derivative of the
target's log-softmax is positive. ``logit``: the loss is minus the target's logit, which
gives the paper's definition (directional derivative of the class logit).

Timed: tcav's whole run for every target (image reading/decoding by the activation
generator, activations, CAV training, per-example gradients, scoring) and the
aggregation. Not timed: imports, building the TF graph from ``model.npz``, the session,
and the logits check against the PyTorch model (done before the timed region, in a
subprocess with a PyTorch interpreter). Activation and CAV folders are fresh temporary
folders per run (cold) unless ``--cache DIR`` is given (a second run is then warm).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import defaultdict
from importlib import metadata
from pathlib import Path

os.environ.setdefault("PROTOCOL_BUFFERS_PYTHON_IMPLEMENTATION", "python")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")

import numpy as np
import tensorflow as tf
from common import BENCH, Measure, parse_args, write_result
from PIL import Image
from tcav import activation_generator, utils
from tcav import model as tcav_model
from tcav import tcav as tcav_lib

tf.compat.v1.logging.set_verbosity(tf.compat.v1.logging.ERROR)


def build_graph(weights: dict[str, np.ndarray], image_size: int) -> dict[str, tf.Tensor]:
    """The W1 CNN (starter CNN) as TF ops: NHWC input in [0, 1] → every block and logits.

    Each ``blockN`` is Conv2d 3x3 pad 1 → ReLU → MaxPool 2x2 (its output is the bottleneck
    ``blockN``), then global average pooling and the ``logits`` linear layer. PyTorch
    layouts are converted: conv (out, in, kh, kw) → (kh, kw, in, out), linear (out, in) →
    matmul with the transpose.
    """
    x = tf.compat.v1.placeholder(tf.float32, [None, image_size, image_size, 3], name="input")
    tensors: dict[str, tf.Tensor] = {"input": x}
    blocks = sorted(
        {k.split(".")[0] for k in weights if k.startswith("block")}, key=lambda b: int(b[5:])
    )
    h = x
    for block in blocks:
        kernel = np.transpose(weights[f"{block}.conv.weight"], (2, 3, 1, 0))
        bias = weights[f"{block}.conv.bias"]
        with tf.compat.v1.name_scope(block):
            h = tf.nn.conv2d(h, tf.constant(kernel), strides=1, padding="SAME")
            h = tf.nn.relu(tf.nn.bias_add(h, tf.constant(bias)))
            h = tf.nn.max_pool2d(h, ksize=2, strides=2, padding="VALID", name="pool")
        tensors[block] = h
    pooled = tf.reduce_mean(h, axis=[1, 2])
    w = weights["logits.weight"].T
    tensors["logit"] = tf.matmul(pooled, tf.constant(w)) + tf.constant(weights["logits.bias"])
    return tensors


class W1ModelWrapper(tcav_model.ImageModelWrapper):
    """tcav model wrapper around the TF graph (the layout of tcav's own image wrappers)."""

    def __init__(
        self,
        sess,
        weights: dict[str, np.ndarray],
        labels: list[str],
        image_size: int,
        bottlenecks: list[str],
        loss: str,
    ) -> None:
        super().__init__([image_size, image_size, 3])
        self.sess = sess
        self.labels = list(labels)
        self.model_name = "w1_cnn_tf"
        self.import_prefix = False
        with sess.graph.as_default():
            tensors = build_graph(weights, image_size)
            self.ends = {
                "input": tensors["input"],
                "logit": tensors["logit"],
                "prediction": tf.nn.softmax(tensors["logit"]),
            }
            self.bottlenecks_tensors = {name: tensors[name] for name in bottlenecks}
            self.y_input = tf.compat.v1.placeholder(tf.int64, shape=[None])
            one_hot = tf.one_hot(self.y_input, len(self.labels))
            if loss == "xent":
                self.loss = tf.reduce_mean(
                    tf.nn.softmax_cross_entropy_with_logits(
                        labels=one_hot, logits=self.ends["logit"]
                    )
                )
            else:
                self.loss = -tf.reduce_mean(tf.reduce_sum(one_hot * self.ends["logit"], axis=1))
            self._make_gradient_tensors()

    def id_to_label(self, idx: int) -> str:
        return self.labels[idx]

    def label_to_id(self, label: str) -> int:
        return self.labels.index(label)


def read_images(folder: Path, size: int, count: int) -> np.ndarray:
    """The first ``count`` images of a folder as (n, size, size, 3) float32 in [0, 1]."""
    arrays = []
    for path in sorted(folder.iterdir()):
        if path.suffix.lower() in (".jpg", ".jpeg", ".png") and len(arrays) < count:
            with Image.open(path) as img:
                img = img.convert("RGB")
                if img.size != (size, size):
                    img = img.resize((size, size), Image.BILINEAR)
                arrays.append(np.asarray(img, dtype=np.float32) / 255.0)
    return np.stack(arrays)


TORCH_LOGITS = """
import sys
import numpy as np
import torch
sys.path.insert(0, sys.argv[1])
import common  # puts bench/ and src/ on sys.path
from workloads import load_model
from pathlib import Path
model = load_model(Path(sys.argv[2]))
x = torch.from_numpy(np.load(sys.argv[3])).permute(0, 3, 1, 2).contiguous()
with torch.no_grad():
    np.save(sys.argv[4], model(x).numpy())
"""


def torch_python() -> str | None:
    """A Python with PyTorch and the benchmark's deps (for the logits check), if any."""
    candidates = [
        os.environ.get("TCAVBENCH_TORCH_PYTHON"),
        str(BENCH.parent / ".venv" / "bin" / "python"),
        str(BENCH / ".venv-captum" / "bin" / "python"),
    ]
    return next((c for c in candidates if c and Path(c).exists()), None)


def check_logits(wrapper: W1ModelWrapper, workload: Path, spec: dict) -> str:
    """Compare the TF graph's logits with the PyTorch model's on a few target images."""
    images = np.concatenate(
        [read_images(workload / "data" / t, spec["image_size"], 2) for t in spec["targets"]]
    )
    tf_logits = wrapper.sess.run(wrapper.ends["logit"], {wrapper.ends["input"]: images})
    python = torch_python()
    if python is None:
        return "logits check skipped: no Python with PyTorch found (set TCAVBENCH_TORCH_PYTHON)"
    with tempfile.TemporaryDirectory() as tmp:
        np.save(f"{tmp}/x.npy", images)
        done = subprocess.run(
            [python, "-c", TORCH_LOGITS, str(Path(__file__).parent), str(workload),
             f"{tmp}/x.npy", f"{tmp}/y.npy"],
            capture_output=True,
            text=True,
            check=False,
            env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"},
        )  # fmt: skip
        if done.returncode != 0:
            tail = " | ".join(done.stderr.strip().splitlines()[-3:])
            return f"logits check FAILED to run with {python}: {tail}"
        torch_logits = np.load(f"{tmp}/y.npy")
    diff = float(np.max(np.abs(tf_logits - torch_logits)))
    scale = float(np.max(np.abs(torch_logits)))
    verdict = "OK" if diff <= 1e-4 * max(1.0, scale) else "MISMATCH"
    return (
        f"logits check TF vs PyTorch on {len(images)} target images: max |diff| = {diff:.2e} "
        f"(max |logit| {scale:.2f}) {verdict}"
    )


def main() -> None:
    args = parse_args(
        [
            ("--cache", {"default": None, "help": "folder for tcav's activations and CAVs"}),
            ("--alpha", {"type": float, "default": 0.1, "help": "CAV alpha (walkthrough: 0.1)"}),
            ("--loss", {"default": "xent", "choices": ["xent", "logit"]}),
            ("--random-counterpart", {"default": None, "help": "tcav's random_counterpart"}),
            ("--seed", {"type": int, "default": 0}),
        ]
    )
    if args.device != "cpu":
        print(f"tcav_run: TensorFlow CPU only; ignoring --device {args.device}", file=sys.stderr)
    np.random.seed(args.seed)
    tf.compat.v1.set_random_seed(args.seed)
    spec = json.loads((args.workload / "workload.json").read_text())
    if spec["model"] != "w1_cnn":
        raise SystemExit(f"tcav_run: only the w1_cnn model is exported to TF, not {spec['model']}")
    weights = dict(np.load(args.workload / "model.npz"))
    sess = utils.create_session(interactive=False)
    wrapper = W1ModelWrapper(
        sess, weights, spec["labels"], spec["image_size"], spec["layers"], args.loss
    )
    check = check_logits(wrapper, args.workload, spec)
    print(check, file=sys.stderr)
    runs = min(spec["runs"], len(spec["random"]))
    work = Path(args.cache) if args.cache else Path(tempfile.mkdtemp(prefix="tcav-tf-"))
    acts_dir, cav_dir = work / "activations", work / "cavs"
    for folder in (acts_dir, cav_dir):
        folder.mkdir(parents=True, exist_ok=True)

    measure = Measure()
    measure.start()
    act_gen = activation_generator.ImageActivationGenerator(
        wrapper,
        str(args.workload / "data"),
        str(acts_dir) + "/",
        max_examples=10**6,  # every image (the folder also holds non-image files)
    )
    per_key: dict[tuple[str, str, str], list[float]] = defaultdict(list)
    timings: dict[str, float] = {}
    n_params = 0
    for target in spec["targets"]:
        started = time.perf_counter()
        mytcav = tcav_lib.TCAV(
            sess,
            target,
            list(spec["concepts"]),
            list(spec["layers"]),
            act_gen,
            [args.alpha],
            random_counterpart=args.random_counterpart,
            cav_dir=str(cav_dir) + "/",
            num_random_exp=runs,
            random_concepts=list(spec["random"][:runs]),
        )
        n_params += len(mytcav.params)
        results = mytcav.run(run_parallel=False)
        timings[f"run {target}"] = time.perf_counter() - started
        for result in results:
            if result["cav_concept"] in spec["concepts"]:
                key = (target, result["cav_concept"], result["bottleneck"])
                per_key[key].append(float(result["i_up"]))
    table = [
        {
            "target": t,
            "concept": c,
            "layer": layer,
            "mean": float(np.mean(v)),
            "std": float(np.std(v, ddof=1)) if len(v) > 1 else 0.0,
            "n": len(v),
        }
        for (t, c, layer), v in per_key.items()
    ]
    measure.stop()
    measure.phases = timings
    sess.close()
    if not args.cache:
        shutil.rmtree(work, ignore_errors=True)
    write_result(
        args.out,
        impl="tcav",
        workload=spec,
        measure=measure,
        scores=table,
        settings={
            "tcav": metadata.version("tcav"),
            "tensorflow": tf.__version__,
            "device": "cpu",
            "cav": f"linear (sklearn SGDClassifier alpha={args.alpha}, 33% test split)",
            "alpha": args.alpha,
            "loss": args.loss,
            "random_counterpart": args.random_counterpart,
            "num_random_exp": runs,
            "params_run": n_params,
            "cache": args.cache is not None,
            "seed": args.seed,
        },
        notes=(
            f"{check}. timed: tcav.TCAV(...).run() for every target (image reading by "
            "ImageActivationGenerator, activations, CAV training, per-example gradients, "
            "scores) and the aggregation; not timed: imports, TF graph construction from "
            "model.npz, session, logits check. Activation/CAV dirs "
            + ("reused from --cache" if args.cache else "fresh")
            + f". {n_params} tcav params (concept-vs-random and random-vs-random runs); "
            "scores are the concept-vs-random runs only; std is the sample std (ddof=1)."
        ),
    )


if __name__ == "__main__":
    main()
