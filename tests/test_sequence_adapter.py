"""Sequence models in the torch adapter: integer inputs, frozen weights, dict inputs passed as
keyword arguments, pooling of (n, T, H) outputs and its gradient against finite differences."""

import pytest
import torch
from torch import nn

from tcavkit.errors import ConfigError, LayerError
from tcavkit.models import TorchModel
from tcavkit.models.pooling import pool, pool_gradient


class TinySequenceModel(nn.Module):
    """ids (n, T) → embedding → tanh(linear) "act" (n, T, 4) → attention over real tokens
    → logits (n, 3); padding tokens (mask 0) change nothing."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = nn.Embedding(10, 4)
        self.enc = nn.Linear(4, 4)
        self.act = nn.Tanh()
        self.head = nn.Linear(4, 3)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> dict:
        h = self.act(self.enc(self.emb(input_ids)))
        scores = (h**2).sum(-1).masked_fill(attention_mask == 0, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        pooled = (weights.unsqueeze(-1) * h).sum(dim=1)
        return {"logits": self.head(2 * torch.tanh(pooled))}


def frozen(model: nn.Module) -> nn.Module:
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model.double()


IDS = torch.tensor([[1, 2, 3, 4], [5, 6, 0, 0], [7, 8, 9, 0]])
MASK = torch.tensor([[1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 1, 0]])
BATCH = {"input_ids": IDS, "attention_mask": MASK}


def test_pooling_values_by_hand():
    value = torch.arange(24, dtype=torch.float64).reshape(2, 3, 4)  # [i, t] = 12i + 4t + 0..3
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    torch.testing.assert_close(pool(value, mask, "cls", "l"), value[:, 0])
    # mean of tokens 0-2 of row 0: 4 + (0..3); of tokens 0-1 of row 1: 12 + 2 + (0..3)
    expected = torch.tensor([[4.0, 5, 6, 7], [14, 15, 16, 17]], dtype=torch.float64)
    torch.testing.assert_close(pool(value, mask, "mean", "l"), expected)
    last = torch.stack([value[0, 2], value[1, 1]])
    torch.testing.assert_close(pool(value, mask, "last", "l"), last)
    # the mean's gradient is the masked sum: row 1 sums tokens 0 and 1 only
    summed = torch.stack([value[0].sum(0), value[1, :2].sum(0)])
    torch.testing.assert_close(pool_gradient(value, mask, "mean", "l"), summed)
    assert pool(value, None, "none", "l").shape == (2, 12)


def test_pooling_none_names_the_lengths_and_non_sequences_are_refused():
    value = torch.zeros(2, 3, 4)
    with pytest.raises(LayerError, match=r"2 lengths \(2, 3 tokens\).*cls, mean or last"):
        pool(value, torch.tensor([[1, 1, 1], [1, 1, 0]]), "none", "enc")
    with pytest.raises(LayerError, match=r"'conv'.*\(2, 3, 4, 5\).*'none'"):
        pool(torch.zeros(2, 3, 4, 5), None, "mean", "conv")


def test_gradients_with_integer_inputs_and_frozen_weights():
    """No input gradient: the hook's leaf gives d logit / d activation, here checked against
    the model's own autograd through a float copy of the embedding output."""
    model = frozen(TinySequenceModel())
    adapter = TorchModel(model, output="logits", device="cpu")
    ids, mask = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]]), torch.ones(2, 4, dtype=torch.long)
    grads = adapter.gradients({"input_ids": ids, "attention_mask": mask}, 2, ["emb", "act"])
    h = model.emb(ids).clone().requires_grad_(True)
    act = model.act(model.enc(h))
    pooled = (torch.softmax((act**2).sum(-1), 1).unsqueeze(-1) * act).sum(1)
    logit = model.head(2 * torch.tanh(pooled))[:, 2].sum()
    d_emb, d_act = torch.autograd.grad(logit, [h, act])
    # both layers from one backward pass: the earlier layer's gradient flows through the later
    torch.testing.assert_close(grads["emb"], d_emb.reshape(2, -1).float())
    torch.testing.assert_close(grads["act"], d_act.reshape(2, -1).float())


def test_dict_inputs_are_keyword_arguments():
    model = frozen(TinySequenceModel())
    adapter = TorchModel(model, output="logits", device="cpu")
    expected = model(input_ids=IDS, attention_mask=MASK)["logits"].float()
    torch.testing.assert_close(adapter.logits(BATCH), expected)
    unpadded = {"input_ids": IDS[:1], "attention_mask": MASK[:1]}
    acts = adapter.activations(unpadded, ["act"])["act"]  # pooling none: (n, T·H)
    expected_acts = model.act(model.enc(model.emb(IDS[:1]))).reshape(1, -1).float()
    torch.testing.assert_close(acts, expected_acts)
    # padding is ignored by the model: the second example alone, unpadded, gives the same logits
    alone = {"input_ids": IDS[1:2, :2], "attention_mask": MASK[1:2, :2]}
    torch.testing.assert_close(adapter.logits(alone), expected[1:2])


@pytest.mark.parametrize("how", ["cls", "mean", "last"])
def test_pooled_gradient_matches_finite_differences(how):
    """The pooled gradient · v equals d/dε logit when the pooled tokens move by ε v: every real
    token for mean, the first for cls, the last real one for last (central differences)."""
    model = frozen(TinySequenceModel())
    adapter = TorchModel(model, output="logits", device="cpu", pooling={"act": how})
    grads = adapter.gradients(BATCH, 1, ["act"])["act"].double()
    v = torch.tensor([0.3, -1.0, 0.5, 2.0], dtype=torch.float64)
    moved = MASK.clone().double()
    if how == "cls":
        moved[:, 1:] = 0
    elif how == "last":
        last = MASK.sum(1) - 1
        moved = torch.zeros_like(moved)
        moved[torch.arange(3), last] = 1

    def logit(eps: float) -> torch.Tensor:
        shift = eps * moved.unsqueeze(-1) * v
        handle = model.act.register_forward_hook(lambda _m, _i, out: out + shift)
        try:
            return model(input_ids=IDS, attention_mask=MASK)["logits"][:, 1]
        finally:
            handle.remove()

    eps = 1e-5
    numeric = (logit(eps) - logit(-eps)) / (2 * eps)
    torch.testing.assert_close(grads @ v, numeric, rtol=1e-4, atol=1e-5)


def test_pooling_by_layer_is_checked():
    with pytest.raises(LayerError, match="unknown layer 'nope'"):
        TorchModel(TinySequenceModel(), output="logits", device="cpu", pooling={"nope": "cls"})
    with pytest.raises(ConfigError, match="unknown model.pooling 'first'"):
        TorchModel(TinySequenceModel(), output="logits", device="cpu", pooling="first")


def test_pooling_none_on_padded_batches_is_an_error():
    adapter = TorchModel(frozen(TinySequenceModel()), output="logits", device="cpu")
    with pytest.raises(LayerError, match=r"pooling 'none'.*3 lengths \(2, 3, 4 tokens\)"):
        adapter.activations(BATCH, ["act"])


def test_cache_keys_follow_the_pooling():
    from tcavkit.examples.base import Selection
    from tcavkit.examples.sources import TensorSource
    from tcavkit.options import Preprocessing
    from tcavkit.pipeline.keys import KeyMaker

    examples = TensorSource(torch.zeros(12, 3)).resolve("s", Selection(min_examples=2))

    def keys(pooling):
        maker = KeyMaker("model", Preprocessing(), pooling=pooling)
        return maker.activations(["l"], examples)["l"], maker.gradients(
            ["l"], examples, 0, None, None
        )["l"]

    plain, cls, mean = keys(()), keys((("l", "cls"),)), keys((("l", "mean"),))
    assert len({plain, cls, mean}) == 3
    assert keys((("other", "cls"),)) == plain  # another layer's pooling changes nothing here
