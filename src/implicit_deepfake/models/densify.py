"""3DGS densification: gsplat's `DefaultStrategy`, with its opacity reset made to work.

In gsplat 1.5.3 `step % self.reset_every == 0 & step > 0` parses as the chained comparison
`step % reset_every == (0 & step) > 0`, which is never true, so opacities are never reset.
"""

from __future__ import annotations

from gsplat.strategy import DefaultStrategy as GsplatDefaultStrategy
from gsplat.strategy.ops import reset_opa


class DefaultStrategy(GsplatDefaultStrategy):
    """gsplat's clone/split/prune rules, plus the periodic opacity reset 3DGS intends."""

    def step_post_backward(self, params, optimizers, state, step, info, packed=False) -> None:
        super().step_post_backward(params, optimizers, state, step, info, packed=packed)
        if 0 < step < self.refine_stop_iter and step % self.reset_every == 0:
            reset_opa(params=params, optimizers=optimizers, state=state, value=self.prune_opa * 2.0)
