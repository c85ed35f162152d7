"""The recommender models behind TFRS's `compute_loss` contract: a backbone alone (BackboneModel),
and SkipRec, a backbone with a policy that picks the blocks each user runs (SkipRecModel).

The backbone is any entry of tf_skiprec.backbones.REGISTRY; the models use only the names every
backbone exposes (embedding, blocks, the block mask, scoring)."""

from __future__ import annotations

import tensorflow as tf
import tensorflow_recommenders as tfrs
import tf_keras as keras

from tf_skiprec import losses, rewards
from tf_skiprec import policy as policy_lib
from tf_skiprec.config_rules import CHOICES
from tf_skiprec.metrics import target_ranks
from tf_skiprec.schedules import Schedules


class BackboneModel(tfrs.models.Model):
  """Autoregressive next-item model: every counted position predicts the next item.

  `compute_loss` takes {"inputs": [B, L], "labels": [B, L]} (labels = inputs shifted by one)
  and returns the mean cross-entropy over positions with a label and a history.
  """

  def __init__(self, backbone, loss: str = "full", num_sampled: int = 1000,
               block_drop: float = 0.0, block_drop_mode: str = "independent", **kwargs):
    super().__init__(**kwargs)
    _check("train.loss", loss)
    _check("model.block_drop_mode", block_drop_mode)
    self.block_drop_mode = block_drop_mode
    self.backbone = backbone
    self.loss_kind = loss
    self.num_sampled = num_sampled
    self.block_drop = block_drop

  def call(self, item_ids, block_mask=None, training=None):
    """item_ids [B, L] -> hidden [B, L, C]."""
    return self.backbone(item_ids, block_mask=block_mask, training=training)

  def compute_loss(self, inputs, training: bool = False) -> tf.Tensor:
    """TFRS's contract: {"inputs": [B, L], "labels": [B, L]} -> scalar loss."""
    return self.compute_loss_and_stats(inputs, training)[0]

  def compute_loss_and_stats(self, inputs, training: bool = False, mode: str | None = None,
                             seed=None, step=0):
    """(loss, {name: scalar}) — the training step logs the stats. Mean next-item cross-entropy.

    With `block_drop` > 0, training skips each block of each sequence with that probability
    (stochastic depth, block_drop_mode "independent"), so that blocks become individually
    skippable for the policy; or ("prefix") runs, with that probability, only the first k blocks
    of the sequence, k uniform in 1..N-1, so that every depth is a good model and the first
    blocks learn what most users need.
    `seed`: a [2] int32 stateless seed for the step's random draws (block drop here; the policy's
    samples in SkipRec), so that a resumed run draws what the uninterrupted one drew; None uses
    TensorFlow's stateful generator. (Dropout and the sampled softmax's negatives stay stateful.)
    `step`: the global step (SkipRec's schedules read it; unused here).
    """
    del step
    mask = None
    if training and self.block_drop > 0:
      shape = [tf.shape(inputs["inputs"])[0], self.backbone.num_blocks]
      draw = (tf.random.uniform(shape) if seed is None
              else tf.random.stateless_uniform(shape, seed))
      if self.block_drop_mode in ("prefix", "prefix_log"):
        mask = _prefix_mask(draw, self.block_drop, self.block_drop_mode == "prefix_log")
      else:
        mask = tf.cast(draw >= self.block_drop, tf.float32)             # [B, N]
    h, labels = self.counted_hidden(inputs, block_mask=mask, training=training)
    return self.counted_loss(h, labels, training=training), {}

  def variable_groups(self) -> dict[str, list[tf.Variable]]:
    """Trainable variables by optimiser name."""
    return {"backbone": self.trainable_variables}

  def after_step(self, stats: dict, step, mode: str | None = None) -> dict:
    """Called by the training step after the update, in cross-replica context, with the step's
    stats averaged over replicas; returns stats to add. Nothing to do for the backbone alone."""
    del stats, step, mode
    return {}

  def decisions(self, history: tf.Tensor, threshold=None, max_blocks=None) -> tf.Tensor:
    """history [B, L] -> keep decisions [B, N]: every block for the backbone alone (the first
    max_blocks of them, with a cap)."""
    del threshold
    keep = tf.ones([tf.shape(history)[0], self.backbone.num_blocks], tf.float32)
    if max_blocks is None:
      return keep
    return tf.cast(policy_lib.keep_at_most(keep, max_blocks), tf.float32)

  def counted_hidden(self, inputs, block_mask=None, training: bool | None = None):
    """{"inputs": [B, L], "labels": [B, L]} -> (the hidden states at the counted positions
    [P, C], their labels [P]), in _counted's order: the backbone's `counted`, whose last block
    runs at those positions only. block_mask: optional [B, N]."""
    mask = losses.position_mask(inputs["inputs"], inputs["labels"])      # [B, L]
    index = tf.where(mask)                                              # [P, 2], row-major
    h = self.backbone.counted(inputs["inputs"], index, block_mask=block_mask, training=training)
    return h, tf.gather_nd(inputs["labels"], index)

  def position_loss(self, hidden, inputs, training: bool = False) -> tf.Tensor:
    """hidden [B, L, C] -> mean cross-entropy over the counted positions (scalar)
    (`counted_loss`)."""
    return self.counted_loss(*_counted(hidden, inputs), training=training)

  def counted_loss(self, h, labels, training: bool = False) -> tf.Tensor:
    """h [P, C], the hidden states at the counted positions, labels [P] -> their mean
    cross-entropy (scalar).

    The sampled softmax (train.loss="sampled") applies in training only; otherwise, and for
    every evaluation, the loss is over the full softmax.
    """
    if self.loss_kind == "sampled" and training:
      weights, bias = self.backbone.output_weights()
      per_position = losses.sampled_softmax_loss(self.backbone.head_input(h), labels, weights,
                                                 bias, self.num_sampled)
    else:
      per_position = losses.full_softmax_loss(self.backbone.logits(h), labels)
    return _mean(per_position)

  def score(self, history: tf.Tensor, block_mask=None) -> tf.Tensor:
    """history [B, L] (left-padded), block_mask [B, N] (None: every block) -> scores of every
    item [B, V]; padding scores -1e9."""
    return self.backbone.score_last(history, block_mask=block_mask)


class SkipRecModel(BackboneModel):
  """SkipRec: a backbone and a policy that picks, per user, the blocks to run.

  Modes (`mode`, or the `mode` argument of `compute_loss_and_stats`):
    "pretrain": the backbone alone, every block.
    "gumbel": straight-through Gumbel-softmax decisions at the temperature of the step's
      schedule; loss = recommendation loss + a compute term on usage = mean executed blocks / N
      (over the batch's windows, or, in training, over the user-balanced rows "budget_inputs"
      (policy.budget_over "users" or "latest") when the batch has them: `_gumbel_decisions`;
      the entropy term stays on the batch's decisions, the ones the loss trains):
      penalty * (usage - budget)^2 (cost "quadratic"), or multiplier * (usage - budget) (cost
      "lagrangian"; `after_step` raises the multiplier by dual ascent while usage exceeds the
      budget); + user_charge * the batch mean of log(k_u + 1), k_u the blocks user u runs (a
      per-user charge whose price per block falls with depth: the k-th costs ~ user_charge / k);
      + entropy_weight * the mean entropy of the decisions, so that the policy decides;
      + distill_weight * (the full backbone's cross-entropy + KL(full || chosen)) (`_distill`).
      The temperature, the budget and the entropy weight are `schedules` of the global step.
    "rl": REINFORCE with a self-critical baseline: advantage = R(sampled) - R(greedy) per window,
      divided by its batch standard deviation when `advantage_norm` (rewards.py). R (`reward`):
      "likelihood", the mean log-likelihood of the window's targets - compute_cost * usage;
      "quadratic" / "reference", the top-k rewards of the window's last target. Both rewards are
      computed with dropout off and carry no gradient; the greedy pass trains nothing. The
      backbone keeps training on the recommendation loss under the sampled decisions (+ the
      distillation term, as in "gumbel"). The charge compute_cost can be ramped in from 0
      (`schedules.compute_cost_scale`).
  At evaluation the decisions are deterministic: keep block i iff P(keep_i) >= the threshold
  passed to `decisions` (policy.threshold in a run; the export takes it as an argument). The
  loss without training (`compute_loss(training=False)`, used by no loop) decides at 0.5.
  """

  def __init__(self, backbone, policy, *, mode: str = "gumbel", schedules: Schedules | None = None,
               cost: str = "quadratic", penalty: float = 20.0, user_charge: float = 0.0,
               distill_weight: float = 0.0, reward: str = "likelihood",
               compute_cost: float = 0.5, advantage_norm: bool = True, reward_top_k: int = 5,
               gamma: float = 1.0, loss: str = "full", num_sampled: int = 1000,
               block_drop: float = 0.0, **kwargs):
    super().__init__(backbone, loss=loss, num_sampled=num_sampled, block_drop=block_drop,
                     **kwargs)
    for key, value in (("train.mode", mode), ("policy.cost", cost), ("policy.reward", reward)):
      _check(key, value)
    self.policy = policy
    self.mode = mode
    self.schedules = schedules or Schedules()
    self.cost = cost
    self.penalty = penalty
    self.user_charge = user_charge
    self.distill_weight = distill_weight
    # The Lagrange multiplier (cost "lagrangian") is state: it is checkpointed with the model.
    self.multiplier = tf.Variable(0.0, trainable=False, dtype=tf.float32, name="multiplier")
    self.reward = reward
    self.compute_cost = compute_cost
    self.advantage_norm = advantage_norm
    self.reward_top_k = reward_top_k
    self.gamma = gamma
    # With dropout on, the sampled decisions' reward takes a pass of its own with dropout off:
    # dropout's noise, larger the more blocks run, would otherwise enter the advantage.
    self._dropout = any(isinstance(layer, keras.layers.Dropout) and layer.rate > 0
                        for layer in backbone.submodules)

  def variable_groups(self) -> dict[str, list[tf.Variable]]:
    return {"backbone": self.backbone.trainable_variables,
            "policy": self.policy.trainable_variables}

  def decisions(self, history: tf.Tensor, threshold=0.5, max_blocks=None) -> tf.Tensor:
    """history [B, L], threshold (float or [] tensor), max_blocks (None, [] or [B] int: at most
    that many blocks per row, its most probable) -> deterministic keep decisions [B, N]."""
    return policy_lib.greedy_decisions(self.policy(history, training=False), threshold,
                                       max_blocks)

  def compute_loss_and_stats(self, inputs, training: bool = False, mode: str | None = None,
                             seed=None, step=0):
    mode = mode or self.mode
    if mode == "pretrain":
      return super().compute_loss_and_stats(inputs, training, seed=seed)
    if mode == "gumbel":
      tau = self.schedules.temperature(step)
      logits, keep, budget_keep = self._gumbel_decisions(inputs, tau, seed, training)
      h, labels = self.counted_hidden(inputs, block_mask=keep, training=training)  # [P, C]
      rec = self.counted_loss(h, labels, training=training)
      usage = tf.reduce_mean(budget_keep)
      budget = self.schedules.budget(step)
      if self.cost == "lagrangian":
        loss = rec + self.multiplier * (usage - budget)
      else:
        loss = rec + self.penalty * tf.square(usage - budget)
      stats = {"rec_loss": rec, "usage": usage, "tau": tau}
      if budget_keep is not keep:
        stats["window_usage"] = tf.reduce_mean(keep)
      if self.user_charge:
        charge = tf.reduce_mean(log_blocks_charge(budget_keep))
        loss += self.user_charge * charge
        stats["user_charge"] = charge
      entropy = tf.reduce_mean(policy_lib.keep_entropy(logits))
      loss += self.schedules.entropy_weight(step) * entropy
      stats["entropy"] = entropy
      return self._with_distill(loss, stats, h, inputs, training), stats
    # REINFORCE with the greedy decisions as the baseline (self-critical).
    logits = self.policy(inputs["inputs"], training=training)           # [B, N, 2]
    keep, log_prob = policy_lib.sampled_decisions(logits, seed)          # [B, N], [B]
    greedy = policy_lib.greedy_decisions(logits, 0.5)                    # [B, N]
    hidden = self.backbone(inputs["inputs"], block_mask=keep, training=training)
    rec = self.position_loss(hidden, inputs, training=training)         # the backbone's loss
    scored = (self.backbone(inputs["inputs"], block_mask=keep, training=False)
              if training and self._dropout else hidden)               # [B, L, C]
    greedy_hidden = tf.stop_gradient(
        self.backbone(inputs["inputs"], block_mask=greedy, training=False))  # [B, L, C]
    cost = self.compute_cost * self.schedules.compute_cost_scale(step)
    reward = tf.stop_gradient(self._reward(scored, inputs, keep, cost))  # [B]
    advantage = reward - tf.stop_gradient(self._reward(greedy_hidden, inputs, greedy, cost))
    weight = rewards.normalized_advantage(advantage) if self.advantage_norm else advantage
    policy_loss = -tf.reduce_mean(weight * log_prob)
    # "advantage": the mean raw R(sampled) - R(greedy), before normalisation.
    stats = {"rec_loss": rec, "reward": tf.reduce_mean(reward),
             "advantage": tf.reduce_mean(advantage), "usage": tf.reduce_mean(keep)}
    return self._with_distill(rec + policy_loss, stats, _counted(hidden, inputs)[0], inputs,
                              training), stats

  def _gumbel_decisions(self, inputs: dict, tau, seed, training: bool):
    """The gumbel step's decisions: (logits [B, N, 2], keep [B, N] on the batch's windows, the
    decisions the compute terms read [B', N]).

    Training samples straight-through decisions; otherwise they are greedy at 0.5. With
    "budget_inputs" [B', L] in `inputs` (the pipeline's user-balanced histories,
    policy.budget_over="users" or "latest"), training runs the policy once over both sets of
    rows (one batch for its batch normalisation, one draw) and the compute terms read the
    decisions on those rows: the budget then holds per user, as validation, model selection,
    calibration and serving count it, not per training window. Else they read `keep`.
    """
    rows = inputs.get("budget_inputs") if training else None
    if rows is None:
      logits = self.policy(inputs["inputs"], training=training)         # [B, N, 2]
      keep = (policy_lib.straight_through_decisions(logits, tau, seed) if training
              else policy_lib.greedy_decisions(logits, 0.5))
      return logits, keep, keep
    n = tf.shape(inputs["inputs"])[0]
    both = self.policy(tf.concat([inputs["inputs"], rows], 0), training=True)  # [B + B', N, 2]
    drawn = policy_lib.straight_through_decisions(both, tau, seed)        # [B + B', N]
    return both[:n], drawn[:n], drawn[n:]

  def _with_distill(self, loss, stats: dict, h_chosen, inputs, training: bool):
    """loss + distill_weight * the distillation term (`_distill`) of h_chosen [P, C], the chosen
    path at the counted positions, its stats added to `stats`; loss unchanged when
    distill_weight is 0."""
    if not self.distill_weight:
      return loss
    term, more = self._distill(h_chosen, inputs, training)
    stats.update(more)
    return loss + self.distill_weight * term

  def _distill(self, h_chosen, inputs, training: bool):
    """In-place distillation (Yu & Huang, universally slimmable networks): h_chosen [P, C], the
    backbone under the chosen blocks at the counted positions (`counted_hidden`) ->
    (full_rec + kl, {"full_rec_loss", "distill_kl"}).

    The full backbone (every block) runs on the same windows: full_rec is its mean cross-entropy
    on the labels (full softmax), and kl the mean over counted positions of
    KL(softmax(full) || softmax(chosen)), the full path's logits detached: the KL moves the
    chosen path towards the full one, never the full path's output towards the chosen one (the
    parts both run, such as the embedding and the head, get the KL through the chosen path). In
    gumbel the KL also reaches the policy, through the straight-through decisions; in rl the
    decisions carry no gradient. The padding id's logit is left out of both softmaxes (it is
    never scored).
    """
    h_full, labels = self.counted_hidden(inputs, training=training)    # [P, C], [P]
    full_logits = self.backbone.logits(h_full)                          # [P, V]
    full_rec = _mean(losses.full_softmax_loss(full_logits, labels))
    teacher = tf.stop_gradient(full_logits[:, 1:])                      # [P, V - 1]
    student = self.backbone.logits(h_chosen)[:, 1:]
    kl = _mean(losses.softmax_kl(teacher, student))
    return full_rec + kl, {"full_rec_loss": full_rec, "distill_kl": kl}

  def after_step(self, stats: dict, step, mode: str | None = None) -> dict:
    """Cost "lagrangian", Gumbel steps: one dual-ascent step of the multiplier on the step's
    mean usage against the step's budget; returns {"multiplier": the new value}."""
    if self.cost != "lagrangian" or (mode or self.mode) != "gumbel":
      return {}
    self.multiplier.assign(self.schedules.dual_ascent(self.multiplier, stats["usage"],
                                                      self.schedules.budget(step)))
    return {"multiplier": self.multiplier.read_value()}

  def _reward(self, hidden, inputs, keep, compute_cost) -> tf.Tensor:
    """hidden [B, L, C] under the decisions keep [B, N] -> reward per window [B] (rewards.py);
    compute_cost: the likelihood reward's charge at this step ([] float32).

    "likelihood": the full softmax at every counted position (losses.position_mask, as the
    recommendation loss counts them): [P, V] logits, P the batch's counted positions, even with
    train.loss = "sampled" (on a catalogue too large for that matrix, use a top-k reward). The
    top-k rewards: the logits of the last position only.
    """
    hidden = tf.stop_gradient(hidden)
    usage = tf.reduce_mean(keep, axis=1)                                # [B]
    if self.reward == "likelihood":
      mask = losses.position_mask(inputs["inputs"], inputs["labels"])  # [B, L]
      windows = tf.cast(tf.where(mask)[:, 0], tf.int32)                # [P]
      logits = self.backbone.logits(tf.boolean_mask(hidden, mask))      # [P, V]
      return rewards.likelihood_reward(logits, tf.boolean_mask(inputs["labels"], mask), windows,
                                       usage, compute_cost)
    last = self.backbone.logits(hidden[:, -1])                          # [B, V]
    ranks = target_ranks(last, inputs["labels"][:, -1])
    return rewards.block_reward(ranks < self.reward_top_k, usage, self.gamma, self.reward)


def _counted(hidden: tf.Tensor, inputs: dict):
  """hidden [B, L, C] -> (its counted positions [P, C], their labels [P]) (losses.position_mask:
  a label and a history)."""
  mask = losses.position_mask(inputs["inputs"], inputs["labels"])      # [B, L]
  return tf.boolean_mask(hidden, mask), tf.boolean_mask(inputs["labels"], mask)


def _mean(per_position: tf.Tensor) -> tf.Tensor:
  """[P] -> their mean; 0 when P = 0."""
  return tf.math.divide_no_nan(tf.reduce_sum(per_position),
                               tf.cast(tf.size(per_position), per_position.dtype))


def log_blocks_charge(keep: tf.Tensor) -> tf.Tensor:
  """keep [B, N] (0/1, or relaxed) -> [B] log(k_u + 1), k_u = the blocks user u runs.

  Concave in k_u: the charge of a user's k-th block, log((k + 1) / k), falls with k (log 2 for the
  first, ~1/k later), so at a fixed mean usage it moves blocks from users who gain little from
  them to users who gain more; the batch-mean budget term charges every block alike.
  """
  return tf.math.log1p(tf.reduce_sum(keep, axis=1))


def _prefix_mask(draw: tf.Tensor, rate: float, log_uniform: bool = False) -> tf.Tensor:
  """draw: [B, N] uniforms -> [B, N] mask: with probability `rate` (draw[:, 0] < rate) a row
  keeps only its first k blocks, k in 1..N-1; else all. k = 1 + floor(draw[:, 1] * (N - 1)),
  uniform; or, `log_uniform`, k = min(floor(N ** draw[:, 1]), N - 1), so P(k) = log((k + 1) / k)
  / log N: short prefixes are trained most (P(1) = 0.2 at N = 32, against 1/31)."""
  n = tf.shape(draw)[1]
  if log_uniform:
    k = tf.cast(tf.exp(draw[:, 1] * tf.math.log(tf.cast(n, tf.float32))), tf.int32)
    k = tf.clip_by_value(k, 1, n - 1)                                   # [B] in 1..N-1
  else:
    k = 1 + tf.cast(draw[:, 1] * tf.cast(n - 1, tf.float32), tf.int32)  # [B] in 1..N-1
  k = tf.where(draw[:, 0] < rate, k, n)
  return tf.cast(tf.range(n)[tf.newaxis, :] < k[:, tf.newaxis], tf.float32)


def _check(key: str, value: str) -> None:
  """A model built without a validated config still refuses an unknown value."""
  if value not in CHOICES[key]:
    raise ValueError(f"{key}={value!r}: not one of {CHOICES[key]}")
