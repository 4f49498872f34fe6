"""A generated bring-your-own-data example: daily output of a few production sites.

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


def main(argv: list[str] | None = None) -> int:
    """``python -m fdrmfl_pipeline.examples PATH [N_DAYS]``: write the table."""
    import logging

    args = sys.argv[1:] if argv is None else argv
    if not args:
        logging.getLogger(__name__).error(
            "usage: python -m fdrmfl_pipeline.examples PATH.csv|PATH.parquet [N_DAYS]"
        )
        return 2
    out = Path(args[0])
    df = make_sites_table(int(args[1])) if len(args) > 1 else make_sites_table()
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.suffix == ".parquet":
        df.to_parquet(out, index=False)
    else:
        df.to_csv(out, index=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
