"""Forecasting engine (pure: frames in, frames out; save/load take paths).

Models (`models.MODEL_NAMES`): `gbm` (one global LightGBM), `prophet` (per series),
`seasonal_naive` (baseline). `training.backtest` compares them on rolling-origin windows,
`training.train` picks per-series champions and returns a `bundle.ForecastBundle`.
"""
