"""Symbolic differentiation (reverse mode, forward mode for Jacobians and Hessians) and the
rule-based simplifier."""

from symgrad.diff.api import grad, hessian, hvp, jacobian
from symgrad.diff.patterns import Rule, RuleSet
from symgrad.diff.rules import DEFAULT_RULES, IDENTITIES, REDUCTIONS, STABILIZE
from symgrad.diff.simplify import Simplifier, simplify

__all__ = ["grad", "jacobian", "hessian", "hvp", "simplify", "Simplifier", "Rule", "RuleSet",
           "DEFAULT_RULES", "IDENTITIES", "REDUCTIONS", "STABILIZE"]
