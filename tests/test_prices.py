"""Money and ownership (issue 22, item 6) and one vocabulary for run totals (item 8): cited
prices in the catalogue, --price-per-hour by device, the cost of owning beside renting, and
--pue, --carbon-intensity, --seq-len on predict, compare, sweep and plan."""
import json
import math
import re
from pathlib import Path

import pytest

from hardware_specs.loader import load_device, parse_device
from simulator import simulate
from simulator.cli import main
from simulator.errors import PlanError, SpecError
from simulator.explore.sweep import compare, resolve_devices, with_prices
from simulator.report.figures import DEFAULT_NODE_COST_USD, HOURS_PER_YEAR

DEVICES = Path(__file__).resolve().parents[1] / "hardware_specs" / "devices"


def cli(argv, capsys):
    code = main(argv)
    out = capsys.readouterr()
    return code, out.out, out.err


def load_device_text(text: str):
    return parse_device(text.encode(), "test.toml")


def _price_table(path: Path) -> str:
    text = path.read_text()
    match = re.search(r"^\[price\]\n((?:#.*\n|\w+ = .*\n)+)", text, re.MULTILINE)
    return match.group(1) if match else ""


def test_catalogue_prices_are_cited_and_plausible():
    """Each [price] table cites its figures (a source and a year in its comments), on-demand
    prices lie between $0.05 and $50 per device-hour and purchase prices between $500 and
    $100,000 (the catalogue's range: a T4 hour, a B200's share of a DGX). At least 40
    devices have an on-demand price (the three server CPUs per socket-hour; the V100 PCIe
    32 GB its nearest rented part's; the M4 Max a whole Mac host's) and 34 a purchase price
    (the T4, P4, L4 and L40S an Amazon.com street price since 2026-12-06; TPUs and Trainium
    are not sold; the others say why no figure is cited)."""
    hourly = bought = 0
    for path in sorted(DEVICES.glob("*.toml")):
        spec = load_device(str(path))
        table = _price_table(path)
        if spec.price_per_hour_usd is None and spec.purchase_usd is None:
            continue
        comments = " ".join(line for line in table.splitlines() if line.startswith("#"))
        assert re.search(r"(19|20)\d\d", comments), path.name
        assert re.search(r"[a-z0-9]\.(com|ai|io|org|net)|arXiv|AWS|Google|Intel|AMD|NVIDIA",
                         comments), path.name
        if spec.price_per_hour_usd is not None:
            hourly += 1
            assert 0.05 <= spec.price_per_hour_usd <= 50, path.name
        if spec.purchase_usd is not None:
            bought += 1
            assert 500 <= spec.purchase_usd <= 100_000, path.name
    assert hourly >= 40 and bought >= 34


# A missing price is stated with its reason: "No on-demand price per device-hour cited: <why>"
# (chip-, GPU-, socket-hour), "No purchase price cited: <why>", or that the device is not sold.
_NO_HOURLY = re.compile(r"no on-demand price per [\w-]+-hour cited( for [\w ]+)?: \w",
                        re.IGNORECASE)
_NO_PURCHASE = re.compile(r"no purchase price cited: \w|\bis not sold|\bare not sold",
                          re.IGNORECASE)


def _price_gaps(spec) -> list[str]:
    """The prices ``spec`` neither gives nor records as missing (a dated ``no_usd_per_hour`` /
    ``no_purchase_usd`` record): what the catalogue check refuses."""
    return [name for name, figure, record in (
        ("usd_per_hour", spec.price_per_hour_usd, spec.rent_unpriced),
        ("purchase_usd", spec.purchase_usd, spec.purchase_unpriced))
        if figure is None and (record is None or record.searched is None)]


def test_every_device_has_a_price_or_a_dated_record(capsys):
    """Each catalogue spec gives each price or records, dated, that it was searched for and
    whether the device is offered at all (no_usd_per_hour / no_purchase_usd), with the reason
    in its comments (none cited and why, or that it is not sold); a spec with neither is
    refused by the check. 'hwsim devices' prints each figure, 'not offered (searched DATE)'
    or 'none cited (searched DATE)' on every device's row, so the two are told apart."""
    reasons = 0
    for path in sorted(DEVICES.glob("*.toml")):
        spec, text = load_device(str(path)), path.read_text().replace("\n# ", " ")
        assert not _price_gaps(spec), (
            f"{path.name}: give {_price_gaps(spec)} or a record "
            "'no_usd_per_hour = {{ offered = false, searched = YYYY-MM-DD }}'")
        if spec.price_per_hour_usd is None:
            assert _NO_HOURLY.search(text), (
                f"{path.name}: write 'No on-demand price per device-hour cited: <why>'")
            reasons += 1
        if spec.purchase_usd is None:
            assert _NO_PURCHASE.search(text), (
                f"{path.name}: write 'No purchase price cited: <why>' (or that it is not sold)")
            reasons += 1
    assert reasons > 0        # the catalogue still has gaps: the check ran on some
    mi325x = (DEVICES / "mi325x.toml").read_text()
    bare = load_device_text(mi325x.replace(
        "no_purchase_usd = { offered = true, searched = 2026-12-06 }\n", ""))
    assert _price_gaps(bare) == ["purchase_usd"]          # neither figure nor record: refused
    assert main(["devices"]) == 0
    rows = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert "rent $4.00/h buy $17,349" in rows["a100-sxm4-80gb"]       # Oracle; HGX share
    assert "rent $1.29/h buy $15,000" in rows["a100-pcie-40gb"]       # Lambda; list price
    assert ("rent none cited (searched 2026-12-06) buy none cited (searched 2026-12-06)"
            in rows["mi210"])                                         # offered, uncitable
    assert "rent $8.60/h buy none cited (searched 2026-12-06)" in rows["mi355x"]   # OCI
    assert "rent $6.00/h buy $25,734" in rows["mi300x"]              # Oracle/Azure; UBB share
    assert "rent $2.10/h buy $15,770" in rows["mi250"]               # RunPod's MI250 page
    # Amazon.com buy-box street prices, the first point of each card's Keepa history
    # (United-Compute/gpu-price-tracker): T4 2019-07-17, P4 2018-02-25, L4 2024-08-05,
    # L40S 2023-11-13
    assert "rent $0.53/h buy $2,337" in rows["t4"]
    assert "rent $0.84/h buy $2,995" in rows["p4"]
    assert "rent $0.43/h buy $2,950" in rows["l4"]
    assert "rent $0.86/h buy $13,745" in rows["l40s"]
    assert "rent $1.95/h buy none cited (searched 2026-12-06)" in rows["mi325x"]
    assert "rent $5.32/h buy $12,000" in rows["h20"]     # Alibaba Cloud gn8v, yuan converted
    assert "rent $1.05/h buy $7,885" in rows["mi250-die"]            # half the package
    assert "rent $1.60/h buy $14,500" in rows["mi250x"]              # Cirrascale via cloud-gpus
    assert "rent $0.80/h buy $7,250" in rows["mi250x-die"]           # half the package
    assert "rent $1.20/h buy not offered (searched 2026-12-04)" in rows["tpu-v5e"]  # not sold
    assert "rent $4.20/h buy not offered (searched 2026-12-04)" in rows["tpu-v5p"]
    assert "rent $5.37/h buy not offered (searched 2026-12-04)" in rows["trainium2"]
    assert ("rent not offered (searched 2026-12-05) buy $9,499 (system)"
            in rows["m3-ultra"])                  # a whole Mac Studio; AWS rents the 60-core part
    assert "rent $6.25/h buy $5,000 (system)" in rows["m4-max"]      # AWS mac-m4max.metal host
    assert ("rent not offered (searched 2026-12-04) buy $6,999 (system)"
            in rows["m2-ultra"])                                     # no M2 Ultra on AWS
    assert "rent $10.50/h buy none cited (searched 2026-12-06)" in rows["gb200"]
    assert "rent none cited (searched 2026-12-06) buy $6,400" in rows["mi100"]
    assert "rent $1.30/h buy $8,125" in rows["gaudi2"]               # Intel Tiber AI Cloud / 8
    assert "rent $2.49/h buy $15,625" in rows["gaudi3"]              # Intel Tiber AI Cloud / 8
    assert "rent $1.65/h buy none cited (searched 2026-12-06)" in rows["alveo-u250"]
    assert ("rent none cited (searched 2026-12-06) buy $8,112"
            in rows["graphcore-bow"])              # IPU-M2000 list price / 4, Bow at the same
    assert ("rent not offered (searched 2026-12-06) buy none cited (searched 2026-12-06)"
            in rows["versal-vck5000"])                               # no cloud rents it
    assert ("rent not offered (searched 2026-12-04) buy not offered (searched 2026-12-04)"
            in rows["snapdragon-8g3"])                               # a phone SoC
    assert "rent n/a (this machine) buy n/a (this machine)" in rows["cpu-host"]
    assert "rent $5.56/h buy $11,805" in rows["epyc-9654"]           # AWS m7a.metal-48xl / 2
    assert "rent $3.84/h buy $8,099" in rows["xeon-8380"]            # 40 M6i core-hours
    assert "rent $5.64/h buy $10,710" in rows["xeon-8480"]           # 56 M7i core-hours
    assert "rent $3.06/h buy $7,500" in rows["v100-pcie-32gb"]       # Azure NC6s v3 (16 GB)
    missing = r"(not offered|none cited) \(searched \d{4}-\d\d-\d\d\)"
    for path in DEVICES.glob("*.toml"):
        assert re.search(rf"rent ({missing}|\$[\d.]+/h) buy ({missing}|\$[\d,]+)",
                         rows[path.stem]), path.stem


def test_the_docs_count_the_specs_with_neither_price():
    """docs/devices.md says how many catalogue files give neither price figure (only the two
    dated records); that count is the catalogue's, so the sentence cannot drift from the specs
    (it said 5 while 4 did, the MI210, Alveo U280, VCK5000 and Snapdragon 8 Gen 3)."""
    text = " ".join((DEVICES.parents[1] / "docs" / "devices.md").read_text().split())
    stated = re.search(r"(\d+) files give neither price figure", text)
    assert stated, "docs/devices.md no longer states how many specs give neither price"
    neither = sorted(path.stem for path in DEVICES.glob("*.toml")
                     if (spec := load_device(str(path))).price_per_hour_usd is None
                     and spec.purchase_usd is None)
    assert int(stated.group(1)) == len(neither), neither


def test_a_missing_price_record_is_checked_and_written_back():
    """A no_usd_per_hour / no_purchase_usd record is an inline table of a bool and a TOML date;
    a record beside its figure, a quoted date, an unknown key are one SpecError naming the
    field; the writer writes it back; a price given by --set or --price-per-hour replaces it."""
    from hardware_specs.override import override
    from hardware_specs.spec import Unpriced
    from hardware_specs.writer import device_toml

    base = (DEVICES / "mi325x.toml").read_text()
    record = "no_purchase_usd = { offered = true, searched = 2026-12-06 }\n"
    assert record in base
    mi325x = load_device_text(base)                   # rented, with no cited purchase price
    assert mi325x.purchase_unpriced == Unpriced(offered=True, searched="2026-12-06")
    assert mi325x.rent_unpriced is None and mi325x.unpriced_words() is None
    assert mi325x.unpriced_words(purchase=True) == "none cited (searched 2026-12-06)"
    again = load_device_text(device_toml(mi325x))
    assert again.purchase_unpriced == mi325x.purchase_unpriced
    for bad, words in (
            ("no_purchase_usd = { offered = true, searched = 2026-12-06 }\npurchase_usd = 2000\n",
             "no_purchase_usd.*given with purchase_usd"),
            ('no_purchase_usd = { offered = true, searched = "2026-12-06" }\n',
             "no_purchase_usd.searched.*TOML date"),
            ("no_purchase_usd = { offered = 1, searched = 2026-12-06 }\n",
             "no_purchase_usd.offered.*true or false"),
            ("no_purchase_usd = { offered = true }\n", "no_purchase_usd.searched.*missing"),
            ("no_purchase_usd = { offered = true, searched = 2026-12-06, why = 1 }\n",
             "no_purchase_usd.why.*unknown key"),
            ("no_purchase_usd = 2026-12-06\n", "no_purchase_usd.*inline table")):
        with pytest.raises(SpecError, match=words):
            load_device_text(base.replace(record, bad))
    only_record = load_device_text(re.sub(
        r"\n\[price\]\n(?:#.*\n|\w+ = .*\n)+", "\n[price]\n" + record, base))
    assert (only_record.price_per_hour_usd, only_record.purchase_usd) == (None, None)
    bought = override(mi325x, {"purchase_usd": 2000})
    assert bought.purchase_unpriced is None and bought.unpriced_words(purchase=True) is None
    rented = with_prices([load_device("mi210")], {"mi210": 1.0})[0]
    assert rented.rent_unpriced is None and rented.purchase_unpriced is not None
    with pytest.raises(SpecError, match="searched.*YYYY-MM-DD"):
        Unpriced(offered=True, searched="4 Dec 2026")


def test_a_record_dated_wrongly_is_one_line_in_the_specs_own_words(tmp_path, capsys):
    """A date-time, a time or a date after today as a record's ``searched`` (and a date as
    purchase_is_system) is one line naming the field and the value as the spec writes it (ISO,
    never Python's ``datetime.datetime(...)``), exit 2; today's date is accepted."""
    import datetime

    base = (DEVICES / "mi325x.toml").read_text()
    record = "no_purchase_usd = { offered = true, searched = 2026-12-06 }\n"
    assert record in base
    today = datetime.date.today()
    tomorrow = (today + datetime.timedelta(days=1)).isoformat()
    path = tmp_path / "t4-dated.toml"
    for bad, words in (
            (record.replace("2026-12-06", "2026-12-06T10:00:00"),
             r"no_purchase_usd\.searched: must be a TOML date .*, got 2026-12-06T10:00:00$"),
            (record.replace("2026-12-06", "2026-12-06T10:00:00Z"),
             r"no_purchase_usd\.searched: .*, got 2026-12-06T10:00:00\+00:00$"),
            (record.replace("2026-12-06", "10:00:00"),
             r"no_purchase_usd\.searched: .*, got 10:00:00$"),
            (record.replace("2026-12-06", "2099-12-04"),
             rf"no_purchase_usd\.searched: 2099-12-04 is after today \({today.isoformat()}\)"),
            (record.replace("2026-12-06", tomorrow),
             rf"no_purchase_usd\.searched: {tomorrow} is after today"),
            (record + "purchase_is_system = 2026-12-06\n",
             r"purchase_is_system: must be true or false, got 2026-12-06$")):
        path.write_text(base.replace(record, bad))
        code, out, err = cli(["predict", "gpt2-small", "--device", str(path)], capsys)
        lines = err.strip().splitlines()
        assert (code, out, len(lines)) == (2, "", 1), (bad, err)
        assert re.search(words, lines[0]) and "datetime" not in err, (bad, err)
    dated_today = load_device_text(base.replace(record, record.replace(
        "2026-12-06", today.isoformat())))
    assert dated_today.purchase_unpriced.searched == today.isoformat()


def test_cost_na_names_the_device_and_where_the_reason_is(capsys, device_file):
    """A run on a device with no cited price prints 'cost n/a' with the device, that its spec
    says why, and the flag that supplies a price; owning it likewise for the purchase price.
    One sentence for each of ``Unpriced.label``'s states, and a spec with no record at all."""
    code, out, _ = cli(["predict", "gpt2-small", "--device", "mi210", "--micro-batch", "4",
                        "--steps", "10", "--own-years", "4", "--electricity-usd-per-kwh", "0.1"],
                       capsys)
    assert code == 0
    assert ("cost n/a (no on-demand price cited for mi210 (searched 2026-12-06), its spec "
            "says why: --price-per-hour USD)") in out
    assert ("owning             n/a (no purchase price cited for mi210 (searched 2026-12-06), "
            "its spec says why: --set purchase_usd=...)") in out
    code, out, _ = cli(["predict", "gpt2-small", "--device", "versal-vck5000", "--micro-batch",
                        "1", "--steps", "10"], capsys)
    assert code == 0
    assert ("cost n/a (versal-vck5000 is not rented by anyone (searched 2026-12-06), its spec "
            "says where: --price-per-hour USD)") in out
    code, out, _ = cli(["predict", "gpt2-small", "--device", "tpu-v4", "--micro-batch", "1",
                        "--steps", "10", "--own-years", "4", "--electricity-usd-per-kwh", "0.1"],
                       capsys)
    assert ("owning             n/a (tpu-v4 is not sold by anyone (searched 2026-12-04), its "
            "spec says where: --set purchase_usd=...)") in out
    own = ["--steps", "10", "--own-years", "4", "--electricity-usd-per-kwh", "0.1"]
    code, out, _ = cli(["predict", "mlp", "--device", "cpu-host", "--micro-batch", "4", *own],
                       capsys)
    assert code == 0
    assert ("owning             n/a (cpu-host is not a product: no purchase price: --set "
            "purchase_usd=...) (devices and nodes over 4 years, electricity at $0.1/kWh) vs "
            "renting n/a (cpu-host is not a product: no on-demand price: --price-per-hour USD)"
            ) in out
    path = device_file(("[price]\nusd_per_hour = 1.5\n", ""))
    code, out, _ = cli(["predict", "gpt2-small", "--device", path, "--micro-batch", "1", *own],
                       capsys)
    assert code == 0
    assert ("owning             n/a (no purchase price cited for test-gpu, its spec says why: "
            "--set purchase_usd=...) (devices and nodes over 4 years, electricity at $0.1/kWh) "
            "vs renting n/a (no on-demand price cited for test-gpu, its spec says why: "
            "--price-per-hour USD)") in out


def test_compare_cost_cells_say_why_a_price_is_missing(capsys):
    """compare's text table prints 'not offered' in the cost cells of a device no one rents
    (sells) and 'none cited' where one is offered without a citable price, with a legend; its
    --json keeps null (the contract)."""
    argv = ["compare", "gpt2-small", "--devices", "a100,mi210,versal-vck5000,tpu-v4",
            "--micro-batch", "1", "--tokens", "1e8", "--own-years", "3",
            "--electricity-usd-per-kwh", "0.1"]
    code, out, _ = cli(argv, capsys)
    assert code == 0
    rows = {line.split()[0]: line for line in out.splitlines()[1:5]}
    counts = {name: (row.count("not offered"), row.count("none cited"))
              for name, row in rows.items()}
    # price_per_hour_usd, cost_usd_per_step, cost_usd (rent) and own_cost_usd (purchase)
    assert counts == {"a100-sxm4-80gb": (0, 0), "mi210": (0, 4), "versal-vck5000": (3, 1),
                      "tpu-v4": (1, 0)}
    assert "n/a" not in " ".join(rows.values())
    assert any(line.startswith("cost columns: 'not offered': no one rents (sells) the device")
               and "'none cited'" in line for line in out.splitlines())
    code, out, _ = cli([*argv, "--json"], capsys)
    by_device = {row["device"]: row for row in json.loads(out)}
    assert by_device["versal-vck5000"]["cost_usd"] is None
    assert by_device["tpu-v4"]["own_cost_usd"] is None
    code, out, _ = cli(["plan", "gpt2-small", "--tokens", "1e8", "--devices",
                        "a100,mi210,versal-vck5000", "--device-counts", "1", "--workers", "1",
                        "--rank-by", "time", "--grid", "micro_batch=4"], capsys)
    assert code == 0
    ranked = {line.split()[1]: line for line in out.splitlines()[2:5]}
    assert not re.search(r"none cited|not offered|n/a", ranked["a100-sxm4-80gb"])  # a figure
    assert "none cited" in ranked["mi210"] and "not offered" in ranked["versal-vck5000"]

def test_the_cloud_prices_are_the_instance_price_per_device():
    """The per-device prices are the cited instance prices over their device counts: a TPU v5p
    slice of 12,288 cores (6,144 chips) at $25,804.80/h, a trn2.48xlarge (16 chips) at
    $85.964/h, Nebius's 8 x B200 VM at $44.00/h, CoreWeave's gb200-4x node (4 GB200 GPUs) at
    $42.00/h, Intel Tiber AI Cloud's 8-card Gaudi 2 and Gaudi 3 nodes at $10.40/h and
    $19.92/h, Azure's NP40s (4 Alveo U250) at $6.60/h; and a run pays device-hours x that
    price."""
    assert load_device("tpu-v5p").price_per_hour_usd == pytest.approx(25804.8 / 6144, abs=1e-9)
    assert load_device("trainium2").price_per_hour_usd == pytest.approx(85.964 / 16, abs=1e-9)
    assert load_device("b200").price_per_hour_usd == pytest.approx(44.0 / 8, abs=1e-9)
    assert load_device("gb200").price_per_hour_usd == pytest.approx(42.0 / 4, abs=1e-9)
    assert load_device("gaudi2").price_per_hour_usd == pytest.approx(10.40 / 8, abs=1e-9)
    assert load_device("gaudi3").price_per_hour_usd == pytest.approx(19.92 / 8, abs=1e-9)
    assert load_device("alveo-u250").price_per_hour_usd == pytest.approx(6.60 / 4, abs=1e-9)
    # RunPod's MI250 page: $2.10 per package-hour; a GCD (mi250-die) pays half of it
    assert load_device("mi250").price_per_hour_usd == pytest.approx(2.10 / 1, abs=1e-9)
    assert load_device("mi250-die").price_per_hour_usd == pytest.approx(2.10 / 2, abs=1e-9)
    # Cirrascale's MI250X, $1.60 per GPU-hour (cloud-gpus.com's dataset, commit c12d1c9) read
    # as one package; a GCD (mi250x-die) pays half of it
    assert load_device("mi250x").price_per_hour_usd == pytest.approx(1.60 / 1, abs=1e-9)
    assert load_device("mi250x-die").price_per_hour_usd == pytest.approx(1.60 / 2, abs=1e-9)
    # Alibaba Cloud's one-GPU ecs.gn8v.4xlarge (H20), 36.3852 CNY/h as quoted in a repository
    # dated by the commit that added it (2026-04-24), at that day's ECB reference rates
    # (USD 1.1712, CNY 8.0067 per euro), to the cent's hundredth
    assert load_device("h20").price_per_hour_usd == pytest.approx(36.3852 * 1.1712 / 8.0067,
                                                                  abs=5e-5)
    h20 = " ".join(_price_table(DEVICES / "h20.toml").replace("# ", "").split())
    for cited in ("github.com/dylanyunlon/Neuron_SP", "commit 56d50e7f of 2026-04-24",
                  "36.3852 CNY/h", "USD 1.1712 and CNY 8.0067 per euro"):
        assert cited in h20, cited
    # A server CPU's socket-hour: the instance's price per physical core (AWS us-east-1,
    # m7a.metal-48xl 192 single-thread cores, m6i.metal 64 and m7i.metal-48xl 96 two-thread
    # cores) times the catalogue part's cores (96, 40, 56).
    assert load_device("epyc-9654").price_per_hour_usd == pytest.approx(11.12832 / 192 * 96,
                                                                         abs=1e-9)
    assert load_device("xeon-8380").price_per_hour_usd == pytest.approx(6.144 / 64 * 40, abs=1e-9)
    assert load_device("xeon-8480").price_per_hour_usd == pytest.approx(9.6768 / 96 * 56,
                                                                         abs=1e-9)
    for name, cores in (("epyc-9654", 96), ("xeon-8480", 56)):   # the 8380's is in its comment
        assert load_device(name).architecture.compute_units == cores, name
    # The V100 PCIe 32 GB is priced as its nearest rented part, Azure's Standard_NC6s_v3: one
    # 16 GB V100 PCIe card at $3.06/h (East US, 2025-03-03); the 32 GB card keeps its own
    # purchase price and capacity.
    v100 = load_device("v100-pcie-32gb")
    assert v100.price_per_hour_usd == pytest.approx(3.06 / 1, abs=1e-9)
    assert (v100.purchase_usd, v100.memory[0].capacity_bytes) == (7500, 32 * 2**30)
    r = simulate("gpt3-1.3b", "tpu-v5p", num_devices=8, micro_batch=4, global_batch=64,
                 tokens=1e10)
    t = r.totals
    assert t["device_hours"] == pytest.approx(t["total_time_s"] * 8 / 3600, rel=1e-12)
    assert t["cost_usd"] == pytest.approx(t["device_hours"] * 4.20, rel=1e-12)


@pytest.mark.parametrize("device, price", [("m3-ultra", 9499), ("m4-max", 5000)])
def test_a_whole_system_purchase_owns_no_node_parts(device, price):
    """A Mac Studio's (a MacBook Pro's) price is the whole computer's (purchase_is_system): its
    own cost is the share of the owning years the run takes of $9,499 ($5,000) plus its energy,
    with no server node's CPUs and NICs added (a GPU without the flag pays an eighth of $32,010
    alone)."""
    r = simulate("gpt2-small", device, micro_batch=4, tokens=1e8, own_years=4,
                 electricity_usd_per_kwh=0.1)
    t = r.totals
    share = t["total_time_s"] / 3600 / (4 * HOURS_PER_YEAR)
    assert load_device(device).purchase_is_system
    assert t["own_cost_usd"] == pytest.approx(share * price + t["energy_kwh"] * 0.1, rel=1e-12)
    rent = load_device(device).price_per_hour_usd          # the M4 Max: AWS's Mac host, $6.25
    assert t["cost_usd"] == (None if rent is None else                 # m3-ultra: not rented
                             pytest.approx(t["device_hours"] * rent, rel=1e-12))
    assert not load_device("rtx-4090").purchase_is_system


def test_a_bow_owns_a_host_servers_share_not_a_gpu_nodes_parts():
    """A Bow IPU's price is a quarter of a Bow-2000's, which holds the chassis, power, fans, BMC
    and the IPU-Gateway's NICs: owning one adds a host server's share (one host per 16 IPUs,
    Bow Pod16; SemiAnalysis's $10,424 CPU server) instead of an eighth of a DGX H100's $32,010
    of other parts, which would count those twice."""
    bow = load_device("graphcore-bow")
    assert bow.node_parts_usd == 10_424 / 16 == 651.5
    assert bow.node_parts_usd < DEFAULT_NODE_COST_USD / 8
    for n in (1, 8):
        r = simulate("gpt2-small", bow, micro_batch=4, tokens=1e8, own_years=4,
                     electricity_usd_per_kwh=0.1, **({"num_devices": n} if n > 1 else {}))
        t = r.totals
        share = t["total_time_s"] / 3600 / (4 * HOURS_PER_YEAR)
        assert t["own_cost_usd"] == pytest.approx(
            share * n * (8112.50 + 651.50) + t["energy_kwh"] * 0.1, rel=1e-12)
    assert load_device("h100-sxm5-80gb").node_parts_usd is None   # a GPU: the nodes' parts


def test_node_parts_usd_is_checked_and_written_back():
    from hardware_specs.writer import device_toml

    base = (DEVICES / "t4.toml").read_text()
    table = "\n[price]\n" + _price_table(DEVICES / "t4.toml")
    parts = load_device_text(base.replace(
        table, "\n[price]\npurchase_usd = 2000\nnode_parts_usd = 250.25\n"))
    assert parts.node_parts_usd == 250.25
    assert load_device_text(device_toml(parts)).node_parts_usd == 250.25
    for text, match in (
            ("usd_per_hour = 1\nnode_parts_usd = 250\n", "node_parts_usd.*needs purchase_usd"),
            ("purchase_usd = 2000\npurchase_is_system = true\nnode_parts_usd = 250\n",
             "node_parts_usd.*not a whole system"),
            ("purchase_usd = 2000\nnode_parts_usd = -1\n", "node_parts_usd.*> 0"),
            ("node_parts_usd = 250\n", "price.*empty table")):
        with pytest.raises(SpecError, match=match):
            load_device_text(base.replace(table, "\n[price]\n" + text))


def test_purchase_is_system_is_checked_and_written_back():
    from hardware_specs.writer import device_toml

    base = (DEVICES / "t4.toml").read_text()
    table = "\n[price]\n" + _price_table(DEVICES / "t4.toml")
    system = load_device_text(base.replace(
        table, "\n[price]\npurchase_usd = 2000\npurchase_is_system = true\n"))
    assert system.purchase_is_system and system.purchase_usd == 2000
    again = load_device_text(device_toml(system))
    assert again.purchase_is_system and again.purchase_usd == 2000
    assert not load_device_text(base).purchase_is_system
    with pytest.raises(SpecError, match="purchase_is_system.*needs purchase_usd"):
        load_device_text(base.replace(table, "\n[price]\nusd_per_hour = 1\n"
                                              "purchase_is_system = true\n"))
    with pytest.raises(SpecError, match="purchase_is_system.*true or false"):
        load_device_text(base.replace(table, "\n[price]\npurchase_usd = 2000\n"
                                              "purchase_is_system = 1\n"))
    with pytest.raises(SpecError, match="price.*empty table"):
        load_device_text(base.replace(table, "\n[price]\npurchase_is_system = false\n"))


def test_a_price_table_needs_a_figure():
    base = (DEVICES / "t4.toml").read_text()
    table = "\n[price]\n" + _price_table(DEVICES / "t4.toml")
    assert table in base
    only_purchase = load_device_text(base.replace(table, "\n[price]\npurchase_usd = 2000\n"))
    assert (only_purchase.price_per_hour_usd, only_purchase.purchase_usd) == (None, 2000)
    with pytest.raises(SpecError, match="price.*empty table"):
        load_device_text(base.replace(table, "\n[price]\n"))
    with pytest.raises(SpecError, match="purchase_usd.*> 0"):
        load_device_text(base.replace(table, "\n[price]\npurchase_usd = -5\n"))


def test_own_cost_is_the_amortised_purchase_plus_energy():
    """Straight-line: the run pays the share of the owning years it takes of the devices'
    purchase and of each node's other parts, plus its kWh at the electricity price."""
    r = simulate("gpt3-1.3b", "h100", num_devices=16, micro_batch=4, global_batch=64,
                 tokens=1e10, own_years=4, electricity_usd_per_kwh=0.12, pue=1.3)
    t = r.totals
    share = t["total_time_s"] / 3600 / (4 * HOURS_PER_YEAR)
    h100 = load_device("h100")
    expected = share * (16 * h100.purchase_usd + 2 * DEFAULT_NODE_COST_USD) \
        + t["energy_kwh"] * 0.12
    assert t["own_cost_usd"] == pytest.approx(expected, rel=1e-12)
    assert t["cost_usd"] == pytest.approx(t["device_hours"] * h100.price_per_hour_usd)
    # a device kept twice as long costs half as much per run (energy unchanged)
    longer = simulate("gpt3-1.3b", "h100", num_devices=16, micro_batch=4, global_batch=64,
                      tokens=1e10, own_years=8, electricity_usd_per_kwh=0.12, pue=1.3)
    assert longer.totals["own_cost_usd"] - t["energy_kwh"] * 0.12 == pytest.approx(
        (expected - t["energy_kwh"] * 0.12) / 2)


def test_one_device_owns_its_share_of_a_node():
    """Without a cluster a single device pays an eighth of a costed 8-GPU node's other parts,
    not the whole node (an RTX 4090 was charged a DGX H100's $32,010 of CPUs and NICs)."""
    r = simulate("gpt2-small", "rtx-4090", tokens=1e8, own_years=4,
                 electricity_usd_per_kwh=0.1)
    t = r.totals
    share = t["total_time_s"] / 3600 / (4 * HOURS_PER_YEAR)
    expected = share * (load_device("rtx-4090").purchase_usd + DEFAULT_NODE_COST_USD / 8) \
        + t["energy_kwh"] * 0.1
    assert t["own_cost_usd"] == pytest.approx(expected, rel=1e-12)


def test_no_purchase_price_no_own_cost():
    r = simulate("gpt2-small", "tpu-v4", micro_batch=1, tokens=1e8, own_years=3,
                 electricity_usd_per_kwh=0.1)
    assert r.totals["own_cost_usd"] is None and r.totals["cost_usd"] is not None


@pytest.mark.parametrize("kwargs, words", [
    ({"own_years": 3}, "both own_years and electricity_usd_per_kwh"),
    ({"electricity_usd_per_kwh": 0.1}, "both own_years and electricity_usd_per_kwh"),
    ({"own_years": 0, "electricity_usd_per_kwh": 0.1}, "own_years"),
    ({"own_years": 3, "electricity_usd_per_kwh": math.nan}, "electricity_usd_per_kwh"),
])
def test_own_cost_bad_input(kwargs, words):
    with pytest.raises(PlanError, match=words):
        simulate("gpt2-small", "h100", micro_batch=1, tokens=1e8, **kwargs)


def test_prices_by_device():
    specs = with_prices(resolve_devices(["a100", "h100", "mi210"], None),
                        {"a100": 1.8, "h100-sxm5-80gb": 2.5})
    assert [s.price_per_hour_usd for s in specs] == [1.8, 2.5, None]
    every = with_prices(resolve_devices(["a100", "mi300x"], None), {"*": 3.0, "a100": 1.0})
    assert [s.price_per_hour_usd for s in every] == [1.0, 3.0]
    with pytest.raises(SpecError, match="h200 is not among the devices"):
        with_prices(resolve_devices(["a100"], None), {"h200": 2.0})


def test_compare_rows_rent_and_own(capsys):
    code, out, _ = cli(["compare", "gpt3-1.3b", "--devices", "a100,h100,mi100",
                        "--num-devices", "8", "--micro-batch", "4", "--global-batch", "64",
                        "--tokens", "1e10", "--price-per-hour", "a100=1.8,h100=2.5",
                        "--own-years", "4", "--electricity-usd-per-kwh", "0.1", "--json"],
                       capsys)
    assert code == 0
    rows = {row["device"]: row for row in json.loads(out)}
    a100 = rows["a100-sxm4-80gb"]
    assert a100["price_per_hour_usd"] == 1.8
    assert a100["cost_usd"] == pytest.approx(a100["total_time_days"] * 24 * 8 * 1.8)
    assert rows["mi100"]["cost_usd"] is None and rows["mi100"]["own_cost_usd"] > 0
    assert all(row["own_cost_usd"] < row["cost_usd"] for row in rows.values()
               if row["cost_usd"] is not None)


def test_predict_prints_owning_beside_renting(capsys):
    code, out, _ = cli(["predict", "gpt2-small", "--device", "h100", "--micro-batch", "8",
                        "--tokens", "1e9", "--own-years", "3", "--electricity-usd-per-kwh",
                        "0.15", "--price-per-hour", "2.0"], capsys)
    assert code == 0
    assert re.search(r"owning +\$[\d,]+ \(devices and nodes over 3 years, electricity at "
                     r"\$0.15/kWh\) vs renting \$[\d,]+", out)


def test_run_flags_are_one_vocabulary(capsys):
    """--pue and --carbon-intensity mean the same on predict and compare (--grid on predict
    and --grid-intensity on sweep and plan stay as their old names); --seq-len too."""
    base = ["gpt2-small", "--micro-batch", "4", "--tokens", "1e9"]
    code, out, _ = cli(["predict", *base, "--device", "a100", "--pue", "1.5",
                        "--carbon-intensity", "0.2", "--json"], capsys)
    predicted = json.loads(out)
    assert predicted["co2_kg"] == pytest.approx(predicted["energy_kwh"] * 0.2)
    code, out, _ = cli(["predict", *base, "--device", "a100", "--pue", "1.5", "--grid", "0.2",
                        "--json"], capsys)
    assert json.loads(out)["co2_kg"] == predicted["co2_kg"]
    code, out, _ = cli(["compare", *base, "--devices", "a100", "--pue", "1.5",
                        "--carbon-intensity", "0.2", "--json"], capsys)
    (row,) = json.loads(out)
    assert row["energy_kwh"] == pytest.approx(predicted["energy_kwh"])
    assert row["co2_kg"] == pytest.approx(predicted["co2_kg"])
    code, out, _ = cli(["compare", *base, "--devices", "a100", "--seq-len", "256", "--json"],
                       capsys)
    (row,) = json.loads(out)
    assert row["tokens_per_s"] == pytest.approx(row["samples_per_s"] * 256)
    for flag in ("--carbon-intensity", "--grid-intensity"):
        code, out, _ = cli(["sweep", "gpt2-small", "--grid", "micro_batch=4", "--tokens",
                            "1e9", "--devices", "a100", "--workers", "1", flag, "0.2",
                            "--pue", "1.5"], capsys)
        assert code == 0 and "co2_kg" in out


@pytest.mark.parametrize("argv, words", [
    (["predict", "gpt2-small", "--device", "a100", "--tokens", "1e9", "--own-years", "3"],
     "electricity_usd_per_kwh"),
    (["compare", "gpt2-small", "--devices", "a100", "--price-per-hour", "h100=2"],
     "h100 is not among the devices"),
    (["compare", "gpt2-small", "--devices", "a100", "--price-per-hour", "a100=cheap"],
     "DEVICE=USD"),
    (["sweep", "gpt2-small", "--devices", "a100", "--electricity-usd-per-kwh", "-1"],
     "finite number > 0"),
    (["compare", "gpt2-small", "--devices", "a100", "--seq-len", "0"], "seq_len = 0"),
    (["compare", "resnet-50", "--devices", "a100", "--seq-len", "128"], "language models"),
    # a grid intensity in g/kWh (the unit most tables use) is 1,000 x too large: say the unit
    (["predict", "gpt2-small", "--device", "a100", "--tokens", "1e9", "--carbon-intensity",
      "400"], "outside [0, 10] (--carbon-intensity is in kg CO2 per kWh"),
    (["compare", "gpt2-small", "--devices", "a100", "--tokens", "1e9", "--pue", "0.5"],
     "pue = 0.5 is outside [1, 10] (--pue: the facility's power over its IT power"),
])
def test_bad_run_flags_are_one_line(argv, words, capsys):
    code, out, err = cli(argv, capsys)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and words in err and "Traceback" not in err


def test_compare_api_takes_totals():
    rows = compare("gpt2-small", ["a100"], micro_batch=4, tokens=1e9,
                   totals={"own_years": 2, "electricity_usd_per_kwh": 0.1})
    assert rows.own_cost_usd.iloc[0] > 0


def test_plot_pareto_reads_the_parquet_a_sweep_writes(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    pytest.importorskip("pyarrow")
    from simulator.explore.sweep import sweep

    rows = tmp_path / "rows.parquet"
    sweep("gpt3-125m", ["a100", "tpu-v4"], [1, 2], [{}], tokens=1e9, workers=1,
          progress=False, out=rows)
    out = tmp_path / "pareto.png"
    assert main(["plot", "pareto", str(rows), "--x", "total_time_s", "--y", "energy_kwh",
                 "--out", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    bad = tmp_path / "bad.parquet"
    bad.write_bytes(b"PAR1 not really")
    assert main(["plot", "pareto", str(bad), "--out", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "cannot read it as a Parquet table" in err and err.count("\n") == 1


def test_cluster_presets_on_compare_and_sweep(capsys):
    """--cluster on compare and sweep runs each preset as predict --cluster does (its device,
    node layout and links); --devices and --cluster mix; neither is one line."""
    from hardware_specs.cluster import load_cluster

    code, out, _ = cli(["compare", "gpt3-1.3b", "--cluster", "dgx-h100", "--devices", "a100",
                        "--micro-batch", "4", "--json"], capsys)
    assert code == 0
    rows = json.loads(out)
    cluster = next(r for r in rows if r["cluster"] == "dgx-h100")
    direct = simulate("gpt3-1.3b", load_cluster("dgx-h100"), micro_batch=4)
    assert cluster["num_devices"] == direct.num_devices == 8
    assert cluster["step_time_s"] == pytest.approx(direct.step_time_s, rel=1e-9)
    assert any(r["device"] == "a100-sxm4-80gb" and r["num_devices"] == 1 for r in rows)
    code, out, _ = cli(["sweep", "gpt3-1.3b", "--cluster", "dgx-h100", "--grid",
                        "micro_batch=4", "--workers", "1"], capsys)
    assert code == 0 and ",dgx-h100," in out
    code, out, err = cli(["compare", "gpt3-1.3b", "--micro-batch", "4"], capsys)
    assert code == 2 and "give --devices" in err and err.count("\n") == 1
    code, out, err = cli(["compare", "gpt3-1.3b", "--cluster", "dgx-nope"], capsys)
    assert code == 2 and err.count("\n") == 1 and "dgx-nope" in err
