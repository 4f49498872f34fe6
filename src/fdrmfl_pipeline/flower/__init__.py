"""Flower adapters: a ClientApp and a ServerApp over the same core functions as the in-process
engine (``core.client.local_update``, ``core.engine.run_rounds``, ``core.aggregation``).

Needs the ``flower`` extra (``pip install -e ".[flower]"``); nothing else imports this package.
"""
