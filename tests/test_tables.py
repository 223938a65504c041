"""Tables: reading CSVs (kinds, missing cells, overrides, splits, one-line errors), the codec's round trip, and the
joint reverse process against closed-form truth (an exact denoiser of correlated normals and an exact joint of
two categorical columns)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import assert_one_line_error
from rediffuse.cli import main
from rediffuse.core.table_diffusion import Layout, sigma_of
from rediffuse.data.table_codec import TableCodec
from rediffuse.data.table_types import Table
from rediffuse.data.tables import holdout_part, load_table, read_csv, write_csv
from rediffuse.errors import ConfigError
from rediffuse.samplers.table import sample_table

CSV = """age,city,score,member,grade,note
34,Paris,1.25,true,3,a
,Lyon,2.5,false,1,b
51,?,NA,true,2,c
29,Paris,0.125,TRUE,3,a
40,Nice,3.0,False,1,b
"""


def write(tmp_path: Path, text: str, name: str = "t.csv") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_kinds_missing_cells_and_categories_are_inferred(tmp_path):
    table = read_csv(write(tmp_path, CSV))
    kinds = {c.name: c.kind for c in table.schema.columns}
    assert kinds == {"age": "categorical", "city": "categorical", "score": "numeric", "member": "boolean",
                     "grade": "categorical", "note": "categorical"}  # few distinct integers are categories
    city = table.schema.column("city")
    assert city.categories == ("Lyon", "Nice", "Paris", "?") and list(table["city"]) == [2, 0, 3, 2, 1]
    assert table.schema.column("member").categories == ("false", "true")
    score = table.schema.column("score")
    assert score.missing and score.missing_token == "NA" and score.decimals == 3
    assert np.isnan(table["score"][2]) and table["score"][3] == 0.125
    assert table.schema.column("grade").categories == ("1", "2", "3")  # numbers in numeric order


def test_overrides_set_kinds_and_drop_columns(tmp_path):
    table = read_csv(write(tmp_path, CSV), "age:int,grade:num,note:drop")
    assert table.schema.names == ["age", "city", "score", "member", "grade"]
    age = table.schema.column("age")
    assert age.kind == "integer" and age.missing and np.isnan(table["age"][1])
    assert table.schema.column("grade").kind == "numeric"


def test_the_csv_round_trip_keeps_names_kinds_categories_and_missing_cells(tmp_path):
    table = read_csv(write(tmp_path, CSV), "age:int")
    write_csv(table, tmp_path / "back.csv")
    again = read_csv(tmp_path / "back.csv", "age:int")
    assert again.schema == table.schema
    for name in table.schema.names:
        np.testing.assert_array_equal(again[name], table[name])
    assert (tmp_path / "back.csv").read_text().splitlines()[3] == "51,?,NA,true,2,c"


def test_the_split_is_the_seeded_permutation_in_halves():
    table = load_table("table:wine")
    train, held = load_table("table:wine@train"), load_table("table:wine@heldout")
    order = np.random.default_rng(0).permutation(len(table))
    assert len(train) == len(table) // 2 and len(train) + len(held) == len(table)
    np.testing.assert_array_equal(train["alcohol"], table["alcohol"][np.sort(order[: len(table) // 2])])
    np.testing.assert_array_equal(held["proline"], holdout_part(table, "heldout")["proline"])


@pytest.mark.parametrize("name", ["wine", "breast_cancer", "diabetes", "iris"])
def test_the_bundled_tables_load_with_their_target(name):
    table = load_table(f"table:{name}", target="target")
    target = table.schema.column("target")
    assert table.schema.target == "target" and len(table) > 100
    assert target.kind == ("integer" if name == "diabetes" else "categorical")


@pytest.mark.parametrize("text, fragment", [
    ("", "no data rows"),
    ("a,b\n1,2\n3\n", "line 3 has 1 fields"),
    ("a,b\n1,?\n2,?\n", "missing in every row"),
    ("id,v\n" + "".join(f"user{i},{i % 3}\n" for i in range(40)), "looks like an identifier"),
])
def test_bad_tables_are_named_with_the_fix(tmp_path, text, fragment):
    with pytest.raises(ConfigError, match=fragment):
        read_csv(write(tmp_path, text))


def test_a_non_utf8_file_names_the_byte(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("a,b\n1,caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="byte 9 is 0xe9"):
        read_csv(path)


def test_a_missing_target_and_an_unknown_override_are_named(tmp_path):
    path = write(tmp_path, CSV)
    with pytest.raises(ConfigError, match="target column 'class' is not in the table"):
        load_table(f"table:{path}", target="class")
    with pytest.raises(ConfigError, match="'height', which is not a column"):
        read_csv(path, "height:num")


def test_train_on_a_bad_table_is_a_one_line_error(tmp_path, capsys):
    path = write(tmp_path, "a,b\n1,2\n3\n")
    code = main(["train", "--data", f"table:{path}", "--objective", "table", "--steps", "2",
                 "--out", str(tmp_path / "run")])
    assert_one_line_error(capsys, code, 2, "line 3 has 1 fields")
    assert not (tmp_path / "run").exists()


def test_the_codec_maps_numbers_to_normal_scores_and_back():
    rng = np.random.default_rng(0)
    table = read_csv_from_columns({"x": rng.lognormal(size=3000), "c": rng.integers(0, 3, 3000).astype(str)})
    codec = TableCodec.fit(table)
    x, labels = codec.encode(table)
    z = x[:, 0].double()
    assert labels is None and abs(float(z.mean())) < 0.02 and abs(float(z.std()) - 1) < 0.02
    back = codec.decode(x)
    np.testing.assert_allclose(back["x"], table["x"], rtol=1e-3)  # x holds float32 normal scores
    np.testing.assert_array_equal(back["c"], table["c"])


def test_decoded_numbers_are_the_numbers_a_csv_writes():
    rng = np.random.default_rng(1)
    table = read_csv_from_columns({"cm": np.round(rng.normal(5, 1, 200), 1), "n": rng.integers(0, 90, 200)})
    assert table.schema.column("cm").decimals == 1 and table.schema.column("n").kind == "integer"
    codec = TableCodec.fit(table)
    z = rng.normal(size=500)
    for name in ("cm", "n"):
        drawn = codec.from_normal(name, z)
        written = np.array([float(cell) for cell in Table(table.schema, {name: drawn}).cells(name)])
        np.testing.assert_array_equal(drawn, written)  # one decimal (or whole), as the file wrote them
        assert len(np.unique(drawn)) > 5  # rounded, not collapsed


def read_csv_from_columns(columns: dict[str, np.ndarray]) -> object:
    """A Table built through the CSV reader from columns of values."""
    from rediffuse.data.tables import build_column
    from rediffuse.data.table_types import Schema, Table

    built = [build_column(name, [f"{v}" for v in values]) for name, values in columns.items()]
    return Table(Schema(tuple(c for c, _ in built)), {c.name: a for c, a in built})


# ---------------------------------------------------------------- the reverse process against exact truth

RHO = 0.7
JOINT = torch.tensor([[0.30, 0.05], [0.05, 0.20], [0.10, 0.30]], dtype=torch.float64)  # P(a, b)


class ExactRows(torch.nn.Module):
    """The exact model of rows (x0, x1) ~ N(0, [[1, RHO], [RHO, 1]]) beside (a, b) ~ JOINT, independent."""

    layout = Layout(2, (3, 2), (-1, -1))
    mask_power = 1.0

    def forward(self, numbers, codes, t, cond=None):
        cov = torch.tensor([[1.0, RHO], [RHO, 1.0]], dtype=torch.float64)
        sigma = float(sigma_of(t[0]))
        gain = cov @ torch.linalg.inv(cov + sigma**2 * torch.eye(2, dtype=torch.float64))
        d = (numbers.double() @ gain.T).to(numbers.dtype)
        a, b = codes[:, 0], codes[:, 1]
        pa = torch.where((b == 2)[:, None], JOINT.sum(1).expand(len(b), -1), JOINT[:, b.clamp(max=1)].T)
        pb = torch.where((a == 3)[:, None], JOINT.sum(0).expand(len(a), -1), JOINT[a.clamp(max=2)])
        return d, [(pa / pa.sum(1, keepdim=True)).log(), (pb / pb.sum(1, keepdim=True)).log()]


def joint_tv(codes: torch.Tensor) -> float:
    """Total variation between the drawn (a, b) pairs and JOINT."""
    counts = torch.zeros(3, 2, dtype=torch.float64)
    counts.index_put_((codes[:, 0].long(), codes[:, 1].long()), torch.ones(len(codes), dtype=torch.float64),
                      accumulate=True)
    return 0.5 * float((counts / len(codes) - JOINT).abs().sum())


@pytest.mark.parametrize("power", [1.0, 2.0])
def test_the_reverse_process_draws_the_exact_joint(power):
    """Measured with 4000 rows and 40 steps: covariance entries within 0.02 of the truth, TV of (a, b) 0.009."""
    model = ExactRows()
    model.mask_power = power
    x = sample_table(model, 4000, 40, generator=torch.Generator().manual_seed(0))
    cov = torch.cov(x[:, :2].double().T)
    assert torch.allclose(cov, torch.tensor([[1.0, RHO], [RHO, 1.0]], dtype=torch.float64), atol=0.07)
    assert joint_tv(x[:, 2:]) < 0.03


class ExactCodes(ExactRows):
    """ExactRows' categories alone (no numbers)."""

    layout = Layout(0, (3, 2), (-1, -1))

    def forward(self, numbers, codes, t, cond=None):
        return numbers, super().forward(torch.zeros(len(codes), 2), codes, t)[1]


@pytest.mark.parametrize("power", [1.0, 2.0, 3.0])
def test_the_categories_nelbo_of_exact_conditionals_is_the_entropy_for_every_schedule(power):
    """Any-order chain rule with exact conditionals: E_t[NELBO] = H(a, b) = 1.574 nats, whatever p in t^p (the
    times start at T_MIN = 0.001, which leaves out a share of about T_MIN^p: 3% at p = 0.5, so it is not tested).
    Measured with 200,000 rows: within 0.01 of H for p = 1, 2, 3; a weight of 1/t instead of p/t gives H / p."""
    from rediffuse.core.table_diffusion import TableDenoiser, table_loss, training_times

    n, g = 200_000, torch.Generator().manual_seed(3)
    pairs = torch.multinomial(JOINT.flatten(), n, replacement=True, generator=g)
    x = torch.stack([pairs // 2, pairs % 2], 1).double()
    model = TableDenoiser(torch.nn.Identity(), ExactCodes.layout, power)
    model.forward = ExactCodes().forward
    t = training_times(n, g)
    loss = table_loss(model, x, t, torch.zeros(n, 0), torch.rand(n, 2, generator=g, dtype=torch.float64))
    entropy = -float((JOINT * JOINT.log()).sum())
    assert abs(float(loss.mean()) * 2 - entropy) < 0.03  # the loss averages the two columns' terms


def test_imputation_keeps_given_cells_and_draws_the_conditionals():
    """b given as 0: a must follow P(a | b = 0) = (2/3, 1/9, 2/9); x0 = 1.5 given: x1 ~ N(1.05, 0.714^2).
    Measured (seeds 1, 2): x1's mean 0.992, 0.997 and std 0.742, 0.734 with reconstruction guidance; replacement
    alone gave a mean of 0.41."""
    n = 4000
    known = torch.zeros(n, 4)
    known[:, 0], known[:, 3] = 1.5, 0.0
    missing = torch.tensor([False, True, True, False])
    x = sample_table(ExactRows(), n, 40, generator=torch.Generator().manual_seed(1), known=known, missing=missing)
    assert torch.equal(x[:, [0, 3]], known[:, [0, 3]])
    share = torch.bincount(x[:, 2].long(), minlength=3).double() / n
    assert torch.allclose(share, JOINT[:, 0] / JOINT[:, 0].sum(), atol=0.03)
    assert abs(float(x[:, 1].mean()) - RHO * 1.5) < 0.1
    assert abs(float(x[:, 1].std()) - (1 - RHO**2) ** 0.5) < 0.06


@pytest.mark.parametrize("name", ["table-mlp", "table-transformer"])
def test_both_table_networks_rebuild_from_their_config_and_train_a_step(name):
    from rediffuse.core.table_diffusion import TableDenoiser, table_loss
    from rediffuse.nets import NETS

    net = NETS[name].from_config(NETS[name](2, [3, 2], num_classes=4).config())
    layout = Layout(2, (3, 2), (-1, 1))
    x = torch.tensor([[0.5, -1.0, 2.0, 0.0], [1.5, 0.0, 1.0, 1.0]])
    out = net(x, torch.zeros(2), torch.tensor([0, 4]))
    assert out.shape == (2, 2 + 3 + 2) and torch.equal(out, torch.zeros_like(out))  # the output starts at zero
    g = torch.Generator().manual_seed(0)
    loss = table_loss(TableDenoiser(net, layout), x, torch.tensor([0.3, 0.9], dtype=torch.float64),
                      torch.randn(2, 2, generator=g), torch.rand(2, 2, generator=g, dtype=torch.float64))
    loss.mean().backward()
    assert torch.isfinite(loss).all() and all(p.grad is not None for p in net.parameters() if p.requires_grad)
