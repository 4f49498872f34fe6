"""Example tables for the bring-your-own-data path (``python -m fdrmfl_pipeline.examples``).

1. Daily output of a few production sites (regression, natural clients, time order).
2. Breast-cancer diagnosis from three views of the same cell nuclei (classification).
3. Power draw of pumps at four plants, with injected faults that differ per plant (anomaly).

**Sites.**

``make_sites_table`` writes what a user's own federation usually looks like: one row per site and
day, sites as natural clients, a slow trend that carries the last months above anything seen in
training, seasons, and three modalities of different kinds in plain columns:

- ``weather_*`` (vector, 5): air temperature, humidity, rainfall, solar radiation, weekday flag;
- ``nir_000..nir_023`` (spectrum, 24 channels): a process sensor whose band near channel 7 grows
  with the feedstock's maturity (the trending driver) and whose band near channel 17 follows the
  moisture (seasonal);
- ``load_00..load_23`` (sequence, 12 two-hourly steps x 2 channels, step-major): the plant's load
  profile (its amplitude carries the day's demand) and a line pressure that carries nothing.

The response (``output``) is linear in maturity, moisture, radiation and demand, has an optimum
in temperature (a quadratic loss away from 18 degrees) and a site offset, plus noise. Every
driver of the response is visible in some modality, and nothing else is; the maturity trend is
what a chronological test must extrapolate. ``python -m fdrmfl_pipeline.examples <path>`` writes
the table (CSV or Parquet, by the suffix).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd

SITES = {  # name: (temperature offset, season phase in days, trend rate, output offset)
    "north": (-3.0, 10.0, 0.9, -2.0),
    "south": (3.0, -12.0, 1.1, 2.0),
    "east": (0.0, 0.0, 1.0, 0.0),
}
N_NIR = 24
N_STEPS = 12


def _ar1(rng: np.random.Generator, n: int, phi: float, sd: float) -> np.ndarray:
    e = rng.normal(0.0, sd * np.sqrt(1 - phi**2), n)
    x = np.empty(n)
    x[0] = rng.normal(0.0, sd)
    for i in range(1, n):
        x[i] = phi * x[i - 1] + e[i]
    return x


def _band(center: float, width: float) -> np.ndarray:
    ch = np.arange(N_NIR, dtype=np.float64)
    return np.exp(-0.5 * ((ch - center) / width) ** 2)


def _site(name: str, n_days: int, rng: np.random.Generator) -> pd.DataFrame:
    t_off, phase, rate, y_off = SITES[name]
    day = np.arange(n_days)
    season = np.sin(2 * np.pi * (day + phase - 100) / 365.25)
    temp = 12.0 + t_off + 9.0 * season + _ar1(rng, n_days, 0.7, 2.5)
    humidity = 65.0 - 1.2 * (temp - 12.0) + _ar1(rng, n_days, 0.5, 6.0)
    rain = rng.gamma(0.6, 4.0, n_days) * (rng.random(n_days) < 0.45)
    radiation = 180.0 + 90.0 * season + rng.normal(0.0, 25.0, n_days)
    weekday = (day % 7 < 5).astype(np.float64)
    maturity = rate * 0.008 * day + _ar1(rng, n_days, 0.8, 0.25)
    moisture = 0.6 * np.cos(2 * np.pi * (day + phase) / 365.25) + 0.02 * rain
    moisture += rng.normal(0.0, 0.2, n_days)
    demand = 0.8 * weekday + rng.normal(0.0, 0.4, n_days)

    baseline = rng.normal(0.0, 0.05, n_days)[:, None] + 0.3 + 0.01 * np.arange(N_NIR)
    nir = (
        baseline
        + 0.25 * maturity[:, None] * _band(7.0, 2.0)
        + 0.3 * moisture[:, None] * _band(17.0, 2.5)
        + rng.normal(0.0, 0.02, (n_days, N_NIR))
    )
    hours = np.arange(N_STEPS) * 2.0
    profile = 1.0 + 0.6 * np.sin(np.pi * (hours - 6.0) / 12.0).clip(0.0)
    load = (1.0 + 0.5 * demand)[:, None] * profile + rng.normal(0.0, 0.1, (n_days, N_STEPS))
    pressure = 2.0 + rng.normal(0.0, 0.15, (n_days, N_STEPS))

    output = (
        30.0
        + y_off
        + 4.0 * maturity
        + 2.0 * moisture
        + 0.012 * (radiation - 180.0)
        + 1.5 * demand
        - 0.03 * (temp - 18.0) ** 2
        + rng.normal(0.0, 0.8, n_days)
    )
    dates = pd.Timestamp("2023-01-01") + pd.to_timedelta(day, unit="D")
    cols: dict[str, np.ndarray] = {
        "site": np.full(n_days, name),
        "date": dates.strftime("%Y-%m-%d").to_numpy(),
        "day": day,
        "output": output,
        "weather_temp": temp,
        "weather_humidity": humidity,
        "weather_rain": rain,
        "weather_radiation": radiation,
        "weather_weekday": weekday,
    }
    cols.update({f"nir_{j:03d}": nir[:, j] for j in range(N_NIR)})
    seq = np.stack([load, pressure], axis=-1).reshape(n_days, -1)  # step-major: (step, channel)
    cols.update({f"load_{j:02d}": seq[:, j] for j in range(seq.shape[1])})
    return pd.DataFrame(cols)


def make_sites_table(n_days: int = 730, seed: int = 20230101, sites=tuple(SITES)) -> pd.DataFrame:
    """One row per (site, day), sorted by day then site; values rounded to 4 significant
    decimals' worth (what a CSV export would hold)."""
    unknown = [s for s in sites if s not in SITES]
    if unknown:
        raise ValueError(f"unknown site(s) {unknown}; expected some of {list(SITES)}")
    if n_days < 20:
        raise ValueError(f"n_days={n_days}: need at least 20 days per site")
    rng = np.random.default_rng(seed)
    frames = [_site(s, n_days, np.random.default_rng(rng.integers(2**32))) for s in sites]
    df = pd.concat(frames, ignore_index=True).sort_values(["day", "site"], kind="stable")
    num = df.select_dtypes("number").columns.drop("day")
    df[num] = df[num].round(4)
    return df.reset_index(drop=True)


# --------------------------------------------------------------------------- classification
NUCLEUS_FEATURES = (
    "radius",
    "texture",
    "perimeter",
    "area",
    "smoothness",
    "compactness",
    "concavity",
    "concave_points",
    "symmetry",
    "fractal_dimension",
)


def make_breast_cancer_table() -> pd.DataFrame:
    """The Wisconsin Diagnostic Breast Cancer data (569 fine-needle aspirates, as scikit-learn
    ships it) as three views of the same ten nucleus measurements: their mean over the
    image's nuclei (``mean_*``), standard error (``se_*``) and worst value (``worst_*``); the
    label ``diagnosis`` is malignant or benign."""
    from sklearn.datasets import load_breast_cancer

    raw = load_breast_cancer()
    x = raw.data
    cols = {}
    for v, view in enumerate(("mean", "se", "worst")):
        for j, name in enumerate(NUCLEUS_FEATURES):
            cols[f"{view}_{name}"] = x[:, 10 * v + j]
    df = pd.DataFrame(cols)
    df.insert(0, "diagnosis", np.asarray(raw.target_names)[raw.target])
    df.insert(0, "aspirate", [f"wdbc_{i:03d}" for i in range(len(df))])
    return df


# --------------------------------------------------------------------------- anomaly
PLANTS = {  # name: (fault kind, nominal speed, pressure offset)
    "plant_a": ("bearing", 1450.0, 0.0),
    "plant_b": ("leak", 1480.0, 0.3),
    "plant_c": ("overheat", 1420.0, -0.2),
    "plant_d": ("clogging", 1500.0, 0.1),
}
N_VIB = 32


def _plant(name: str, n: int, rng: np.random.Generator, fault_rate: float) -> pd.DataFrame:
    kind, speed0, p_off = PLANTS[name]
    t = np.arange(n)
    load = np.clip(0.6 + 0.25 * np.sin(2 * np.pi * t / 96) + _ar1(rng, n, 0.9, 0.05), 0.1, 1.0)
    speed = speed0 * (0.85 + 0.15 * load) + rng.normal(0, 5, n)
    pressure = 2.0 + p_off + 1.5 * load + rng.normal(0, 0.05, n)
    ambient = 15 + 8 * np.sin(2 * np.pi * t / 480) + rng.normal(0, 0.5, n)
    flow = 40 * load * (1 + rng.normal(0, 0.02, n))
    fault = rng.random(n) < fault_rate
    severity = rng.uniform(0.5, 1.0, n) * fault
    freqs = np.arange(N_VIB)
    base = speed[:, None] / 1500.0
    vib = (
        np.exp(-0.5 * ((freqs[None, :] - 6 * base) / 1.2) ** 2) * (0.5 + load[:, None])
        + 0.5 * np.exp(-0.5 * ((freqs[None, :] - 12 * base) / 1.5) ** 2) * load[:, None]
        + rng.normal(0, 0.03, (n, N_VIB))
    )
    motor = ambient[:, None] + 20 + 25 * load[:, None] * np.linspace(0.9, 1.1, 12)[None, :]
    motor = motor + rng.normal(0, 0.4, (n, 12))
    power = 2.0 + 9.0 * load * (pressure / 3.0) + 0.002 * (speed - 1400) + rng.normal(0, 0.15, n)
    # faults: each plant has its own kind, visible in some modality and often in the power draw
    if kind == "bearing":  # a new vibration band, a little more power
        vib += 0.8 * severity[:, None] * np.exp(-0.5 * ((freqs[None, :] - 24) / 1.0) ** 2)
        power += 0.4 * severity
    elif kind == "leak":  # pressure drops, flow rises, power rises
        pressure -= 0.6 * severity
        flow += 8 * severity
        power += 0.8 * severity
    elif kind == "overheat":  # the motor heats up along the window
        motor += 12 * severity[:, None] * np.linspace(0.2, 1.0, 12)[None, :]
        power += 0.3 * severity
    else:  # clogging: flow falls at the same load, power rises
        flow -= 10 * severity
        power += 1.0 * severity
    df = pd.DataFrame(
        {
            "plant": name,
            "hour": t.astype(float),
            "power_kw": power,
            "fault": fault.astype(int),
            "fault_kind": np.where(fault, kind, "none"),
            "proc_speed": speed,
            "proc_pressure": pressure,
            "proc_flow": flow,
            "proc_ambient": ambient,
        }
    )
    vib_cols = pd.DataFrame(vib, columns=[f"vib_{i:02d}" for i in range(N_VIB)])
    temp_cols = pd.DataFrame(motor, columns=[f"temp_{i:02d}" for i in range(12)])
    return pd.concat([df, vib_cols, temp_cols], axis=1)


def make_sensors_table(
    n_hours: int = 600, seed: int = 20240601, fault_rate: float = 0.06
) -> pd.DataFrame:
    """One row per (plant, hour): the power draw to model, three sensor modalities (process
    values, a 32-bin vibration spectrum, a 12-step motor temperature window) and the injected
    faults (``fault`` 0/1, ``fault_kind``), a different kind at each plant."""
    if n_hours < 50:
        raise ValueError(f"n_hours={n_hours}: need at least 50 hours per plant")
    rng = np.random.default_rng(seed)
    frames = [
        _plant(p, n_hours, np.random.default_rng(rng.integers(2**32)), fault_rate) for p in PLANTS
    ]
    df = pd.concat(frames, ignore_index=True).sort_values(["hour", "plant"], kind="stable")
    num = df.select_dtypes("number").columns.drop(["hour", "fault"])
    df[num] = df[num].round(4)
    return df.reset_index(drop=True)


EXAMPLES = {
    "sites": make_sites_table,
    "breast_cancer": make_breast_cancer_table,
    "sensors": make_sensors_table,
}


def main(argv: list[str] | None = None) -> int:
    """``python -m fdrmfl_pipeline.examples [sites|breast_cancer|sensors] PATH [N]``: write
    one example table (default: sites; N: days or hours)."""
    import logging

    args = list(sys.argv[1:] if argv is None else argv)
    name = args.pop(0) if args and args[0] in EXAMPLES else "sites"
    if not args:
        logging.getLogger(__name__).error(
            "usage: python -m fdrmfl_pipeline.examples [%s] PATH.csv|PATH.parquet [N]",
            "|".join(EXAMPLES),
        )
        return 2
    out = Path(args[0])
    make = EXAMPLES[name]
    df = make(int(args[1])) if len(args) > 1 and name != "breast_cancer" else make()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        df.to_parquet(out, index=False)
    else:
        df.to_csv(out, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
