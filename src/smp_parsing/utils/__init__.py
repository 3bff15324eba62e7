"""Experiment plumbing shared by the entry points: resolvers, run context, instantiators, callbacks."""

from smp_parsing.utils.resolvers import register_resolvers

# Resolvers must exist before Hydra composes any config that names them.
register_resolvers()

__all__ = ["register_resolvers"]
