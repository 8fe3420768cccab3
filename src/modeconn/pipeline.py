"""The stages of a study: train → sweep → basins → report, each callable from Python.

>>> from modeconn import StudyRunner, load_study          # doctest: +SKIP
>>> runner = StudyRunner(load_study("study.yaml"))        # doctest: +SKIP
>>> result = runner.run()                                 # doctest: +SKIP
>>> result.basins                                         # a pandas DataFrame  # doctest: +SKIP

Every stage reads what earlier stages left on disk (members, the results store), so a
rerun skips all work already done, and :func:`analyze` / :func:`write_study_report`
rebuild basins and the report from a store alone.
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from modeconn.analyses.run import analyze_study
from modeconn.config.study import Study
from modeconn.data.base import Split
from modeconn.data.text import Example, read_examples
from modeconn.engine.blockwise import BlockRule
from modeconn.engine.evaluate import Evaluator
from modeconn.engine.planning import landmark_plan
from modeconn.engine.spec import EngineSpec, build_engine, engine_spec
from modeconn.engine.sweep import MemberRef, SweepPlan, SweepStats, plan_sweep, run_sweep
from modeconn.errors import ConfigError, DataError
from modeconn.models.hf import load_classifier, load_tokenizer, resolve_pretrained
from modeconn.population.members import Member, Population, check_label_order
from modeconn.population.train import (
    MemberPlan,
    adopt_trained,
    clean_partial,
    pretrained_identity,
    recipe_fingerprint,
    train_member,
)
from modeconn.results import StudyResult
from modeconn.stages import affinity_stages, block_rule, landmark_stages, landmarks_in_stages
from modeconn.store import Store

if TYPE_CHECKING:
    from modeconn.engine.backends import WorkerSpec

log = logging.getLogger("modeconn")


class StudyRunner:
    """Runs one study's stages; holds the tokenizer, splits and engine between them."""

    def __init__(
        self, study: Study, *, progress: bool = True, say: Callable[[str], None] | None = None
    ) -> None:
        self.study = study
        self.progress = progress
        self.say = say or log.info
        # a Hugging Face model is checked now; another kind is resolved by its builder
        self.model_dir = (
            resolve_pretrained(study.model.pretrained, base=study.base)
            if study.model.kind == "hf" and study.model.pretrained is not None
            else None
        )
        if self.model_dir is not None:
            check_label_order(self.model_dir, study.model.label_order, what="model.pretrained")
        self._tokenizer: Any = None
        self._splits: dict[str, Split] | None = None
        self._population: Population | None = None
        self._evaluator: Evaluator | None = None
        self._members: list[MemberRef] | None = None
        if study.eval.threads:
            torch.set_num_threads(study.eval.threads)

    # ---- inputs ---------------------------------------------------------------------

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            self._tokenizer = load_tokenizer(self._hf_dir())
        return self._tokenizer

    def _hf_dir(self) -> Path:
        if self.model_dir is None:
            raise ConfigError(
                f"model kind '{self.study.model.kind}' has no pretrained checkpoint or "
                "tokenizer; this step needs `model.kind: hf`"
            )
        return self.model_dir

    @property
    def label_order(self) -> list[str]:
        return list(self.study.model.label_order)

    def engine_spec(self) -> EngineSpec:
        """The engine this study asks for; the sweep workers build from the same spec."""
        return engine_spec(self.study)

    def _engine(self) -> tuple[Evaluator, dict[str, Split]]:
        if self._evaluator is None or self._splits is None:
            self._evaluator, self._splits = build_engine(self.engine_spec())
        return self._evaluator, self._splits

    def splits(self) -> dict[str, Split]:
        """Every evaluation split, sampled, encoded and collated once (keyed for the
        engine's BatchNorm policy when the model has BatchNorm)."""
        return self._engine()[1]

    def member_plans(self) -> list[MemberPlan]:
        """The members a study's `train` section trains from the pretrained model, with
        their data and seeds (``recipe: cue`` is plain fine-tuning on a cued split; arms
        with ``from`` are fine-tuned afterwards, :mod:`modeconn.population.recipes`)."""
        from modeconn.population.train import LinearProbe

        train = self.study.train
        if train is None:
            return []
        plans = []
        for arm in train.arms:
            if arm.from_ is not None:
                continue  # fine-tuned from trained members (modeconn.population.recipes)
            probe = None
            if arm.recipe == "lp-ft":
                probe = LinearProbe(examples=arm.probe_examples or train.examples, lr=arm.probe_lr)
            base = read_examples(self.study.split_spec(arm.data))
            pool = list(base)
            if arm.mix is not None:
                extra = read_examples(self.study.split_spec(arm.mix.split))
                k = round(arm.mix.fraction / (1.0 - arm.mix.fraction) * len(base))
                if k > len(extra):
                    raise DataError(
                        f"train.arms[{arm.name}].mix: needs {k} examples from split "
                        f"'{arm.mix.split}' but it has {len(extra)}; lower the fraction"
                    )
                chosen = random.Random(0).sample(range(len(extra)), k)
                lm = arm.mix.label_map
                pool += [
                    Example(
                        extra[i].text_a, extra[i].text_b, lm.get(extra[i].label, extra[i].label)
                    )
                    for i in chosen
                ]
            for i in range(arm.members):
                seed = arm.seed_offset + i
                plans.append(
                    MemberPlan(
                        member_id=f"{arm.name}-{i:02d}",
                        arm=arm.name,
                        head_seed=seed if arm.vary in ("both", "head") else arm.seed_offset,
                        data_seed=seed if arm.vary in ("both", "data") else arm.seed_offset,
                        examples=tuple(pool),
                        probe=probe,
                    )
                )
        return plans

    def train(self) -> list[Path]:
        """Fine-tune the members the study asks for; members already trained are kept."""
        from modeconn.population.train import checkpoint_steps

        train = self.study.train
        if train is None:
            return []
        if self.study.model.kind == "cnn":  # trained from a seeded init, not a checkpoint
            from modeconn.population.train_vision import train_image_members

            return train_image_members(
                self.study, self.engine_spec().model, progress=self.progress, say=self.say
            )
        out = self.study.members_dir()
        clean_partial(out)
        recipe = train.recipe(self.study.model.max_length)
        plans = self.member_plans()
        model_dir = self._hf_dir()
        base = pretrained_identity(model_dir)  # by content: another checkout reuses members
        # each arm's recipe: the study's, with the arm's own examples / lr where it gives them
        recipes = {p.arm: replace(recipe, **train.overrides(p.arm)) for p in plans}
        todo = [
            p
            for p in plans
            if not adopt_trained(
                out,
                p.member_id,
                recipe_fingerprint(p, recipes[p.arm], base),
                recipe_fingerprint(p, recipes[p.arm], str(model_dir)),  # as fingerprinted before
                # a member is trained once its checkpoints are too
                checkpoints=checkpoint_steps(recipes[p.arm]),
            )
        ]
        if todo:
            self.say(f"training {len(todo)} of {len(plans)} members into {out}")
        from tqdm.auto import tqdm

        for plan in tqdm(todo, desc="members", unit="member", disable=not self.progress):
            train_member(
                lambda: load_classifier(
                    model_dir, self.label_order, num_layers=self.study.model.num_layers
                ),
                self.tokenizer,
                plan,
                self.label_order,
                recipes[plan.arm],
                out,
                base=base,
                progress=self.progress,
            )
        paths = [out / f"{p.member_id}.safetensors" for p in plans]
        if any(arm.from_ is not None for arm in train.arms):
            from modeconn.population.recipes import train_recipe_members

            paths += train_recipe_members(
                self.study,
                self.engine_spec().model,
                base=base,
                progress=self.progress,
                say=self.say,
            )
        return paths

    def population(self) -> Population:
        if self._population is None:
            trained = self.train()
            paths = self.study.member_paths()
            if trained:
                pop = Population.from_paths(trained)
            elif paths is not None:
                pop = Population.from_paths(paths)
            else:
                pop = Population.from_dir(self.study.members_dir())
            if len(pop) < 2:
                raise ConfigError(
                    f"a study needs at least 2 members; found {len(pop)} in "
                    f"{self.study.members_dir()}"
                )
            # each member's own labels against model.label_order, before anything is written
            for m in pop:
                if m.kind == "hf":
                    check_label_order(m.source, self.label_order, what=f"member '{m.id}'")
            self._population = pop
        return self._population

    def evaluator(self) -> Evaluator:
        return self._engine()[0]

    def members(self) -> list[MemberRef]:
        """Members with their weight hashes, each checked against the model's architecture,
        and no two with the same weights (:meth:`Population.hashes`).

        Checked once per runner: the sweep and the analyses after it share the result.
        """
        if self._members is None:
            pop = self.population()
            reference = self.evaluator().model.state_dict()
            refs = []
            for m in sorted(pop, key=lambda m: m.id):  # pair orientation by id, not listing
                state = pop.load(m.id)
                _check_against(reference, state, m)
                refs.append(MemberRef(m.id, pop.hash(m.id)))
            pop.hashes()  # the same weights under two ids: refused before any write
            self._members = refs
        return list(self._members)

    # ---- stages ---------------------------------------------------------------------

    def open_store(self) -> Store:
        self.study.out_path().mkdir(parents=True, exist_ok=True)
        return Store(self.study.store_path(), study=self.study.name)

    def plan(
        self,
        store: Store,
        *,
        sequential: BlockRule | bool | None = True,
        pairs: list[tuple[int, int]] | None = None,
    ) -> SweepPlan:
        """The sweep's plan against ``store``; ``sequential`` replaces the study's rule
        (``True``: the study's own, ``None``: none), ``pairs`` the landmark plan's pairs."""
        rule = block_rule(self.study) if sequential is True else sequential
        return plan_sweep(
            self.members(),
            self.splits(),
            path_splits=self.study.paths.splits,
            member_splits=self.study.eval_splits(),
            points=self.study.paths.points,
            store=store,
            pairs=pairs or landmark_plan(len(self.members()), self.study.basins),
            tolerance=self.study.paths.tolerance,
            sequential=rule or None,
        )

    def check_analyses(self) -> None:
        """Analysis options that name parts of the model or members (a layer-wise block,
        a pair), checked against the model's state names and the member ids before
        anything is trained, swept or written: every enabled analysis with a
        ``check_inputs(study, keys=..., members=...)`` method is asked. The member ids of
        a study that trains are those its arms will produce."""
        from modeconn.analyses.registry import enabled

        checks = [a for a in enabled(self.study) if hasattr(a, "check_inputs")]
        if not checks:
            return
        train = self.study.train
        if train is not None:
            ids = [f"{arm.name}-{i:02d}" for arm in train.arms for i in range(arm.members)]
        else:
            ids = [m.id for m in self.population()]
        keys = list(self.evaluator().keys)
        for analysis in checks:
            analysis.check_inputs(self.study, keys=keys, members=ids)

    def check_population_size(self) -> None:
        """Basins need three members: refuse a smaller population before anything is
        trained or swept (the arms' member counts, or the population's files)."""
        train = self.study.train
        if train is not None:
            n = sum(arm.members for arm in train.arms)
            where = "train.arms"
            fix = "raise an arm's `members` (a member of a few steps is enough)"
        else:
            n = len(self.population())
            where = "population"
            fix = "list more members"
        if n < 3:
            raise ConfigError(
                f"{where}: {n} member(s) in all; finding basins needs at least 3: {fix}"
            )

    def sweep(self) -> SweepStats:
        """Evaluate every missing member point and path unit, writing as it goes."""
        self.splits()  # a bad split fails here, before any member is trained or loaded
        self.check_analyses()  # so does a block or pair an analysis names
        self.check_population_size()  # and a population too small for basins
        self.population()
        self.evaluator()
        self.members()  # every member checked (shapes, duplicates) before the store is opened
        self.check_analyses()
        with self.open_store() as store:
            plan = self.plan(store)
            self._record(store, plan)
            self.say(
                f"sweep: {len(plan.members)} members, {plan.n_units} path units "
                f"({len(plan.unit_todo)} to do), {plan.n_member_points} member points "
                f"({len(plan.member_todo)} to do)"
            )
            if landmarks_in_stages(self.study, len(self.members())):
                return landmark_stages(self, store)
            rule = plan.sequential
            if rule is not None and rule.affinity is not None and rule.delta is None:
                return affinity_stages(self, plan, rule, store)
            return self._execute(plan, store)

    def _execute(self, plan: SweepPlan, store: Store) -> SweepStats:
        """Run `plan` on the study's sweep backend."""
        pop, ev = self.population(), self.evaluator()
        cfg = self.study.sweep
        if cfg.backend == "local":
            return run_sweep(
                plan,
                ev,
                lambda mid: ev.as_point(pop.load(mid), name=mid),
                self.splits(),
                store,
                progress=self.progress,
            )
        from modeconn.engine.backends import run_parallel_sweep

        if plan.member_todo or plan.unit_todo:
            where = f" at {cfg.address}" if cfg.address else ""
            self.say(
                f"sweep backend: {cfg.backend}{where}, {cfg.workers} workers × "
                f"{cfg.threads_per_worker} threads"
            )
        return run_parallel_sweep(
            plan,
            self.worker_spec(plan),
            self.splits(),
            store,
            backend=cfg.backend,
            workers=cfg.workers,
            address=cfg.address,
            max_retries=cfg.max_retries,
            progress=self.progress,
        )

    def worker_spec(self, plan: SweepPlan) -> WorkerSpec:
        """What a sweep worker needs to rebuild this runner's splits and engine by itself.

        The runner's own :class:`~modeconn.engine.spec.EngineSpec` with data paths made
        absolute (a worker's working directory is not ours) and the worker's thread
        count, the keys the plan used, and the members by path.
        """
        from modeconn.engine.backends import MemberSource, WorkerSpec

        pop, splits = self.population(), self.splits()
        spec = self.engine_spec()
        return WorkerSpec.build(
            spec,
            keys=tuple((name, s.key) for name, s in splits.items()),
            members=tuple(
                MemberSource(m.id, str(pop[m.id].source.resolve()), m.hash) for m in plan.members
            ),
            alphas=plan.alphas,
            threads=self.study.sweep.threads_per_worker,
        )

    def _record(self, store: Store, plan: SweepPlan) -> None:
        """Keep in the store what `report` and `status` need without the study file."""
        _check_dtype(store, self.study)
        splits = self.splits()
        pop = self.population()
        members = [{"id": m.id, "hash": m.hash, **_meta(pop[m.id])} for m in plan.members]
        store.set_meta("study", self.study.model_dump_json(exclude={"base_dir"}))
        store.set_meta("members", json.dumps(members))
        store.set_meta(
            "splits",
            json.dumps(
                {
                    n: {
                        "key": s.key,
                        "sample_seed": s.spec.sample_seed,
                        "sample_size": s.n,
                        "metric": s.spec.metric,
                        "role": s.spec.role,
                    }
                    for n, s in splits.items()
                }
            ),
        )
        store.set_meta("grid", json.dumps({"grid": plan.grid, "alphas": list(plan.alphas)}))

    def analyze(self) -> StudyResult:
        with Store(self.study.store_path(), study=self.study.name, create=False) as store:
            return analyze_study(store, self.study)

    def report(self, result: StudyResult | None = None) -> Path:
        from modeconn.report.study import write_study_report

        with Store(self.study.store_path(), study=self.study.name, create=False) as store:
            res = result or analyze_study(store, self.study)
            return write_study_report(store, res, self.study.out_path() / self.study.report_dir)

    def measure(self) -> None:
        """What the enabled analyses need from the weights, kept in the store.

        Each analysis's ``measure`` (:mod:`modeconn.analyses`) gets a small context
        (engine, splits, population, members, store, progress) and skips what is done.
        """
        from modeconn.analyses.base import MeasureContext
        from modeconn.analyses.registry import enabled

        todo = [a for a in enabled(self.study) if a.needs_weights]
        if not todo:
            return
        pop = self.population()
        refs = self.members()
        with self.open_store() as store:
            ctx = MeasureContext(
                study=self.study,
                store=store,
                evaluator=self.evaluator(),
                splits=self.splits(),
                population=pop,
                members=tuple(refs),
                check_weights=lambda state, m: _check_against(
                    self.evaluator().model.state_dict(), state, m
                ),
                progress=self.progress,
                say=self.say,
            )
            for analysis in todo:
                analysis.measure(ctx)

    def run(self) -> StudyResult:
        """Every stage in order; returns the analysis with the report's path set."""
        self.sweep()
        self.measure()
        result = self.analyze()
        path = self.report(result)
        return result.with_report(path)


def _check_dtype(store: Store, study: Study) -> None:
    """Refuse to add rows of one `eval.dtype` to a store holding rows of another.

    Rows are keyed by weights, data and grid, not by dtype, so a rerun in bfloat16 would
    otherwise resume a float32 sweep and mix the two in one curve.
    """
    recorded = store.get_meta("study")
    if recorded is None:
        return
    before = json.loads(recorded).get("eval", {}).get("dtype", "float32")
    if before != study.eval.dtype:
        raise ConfigError(
            f"results store {store.path} holds rows evaluated with eval.dtype {before!r}, "
            f"but the study now asks for {study.eval.dtype!r}; rows are not keyed by dtype, "
            f"so set `eval.dtype: {before}` to resume, or give the study a new output_dir"
        )


def _meta(member: Member) -> dict[str, Any]:
    m = member.meta
    return {
        "arm": m.arm,
        "head_seed": m.head_seed,
        "data_seed": m.data_seed,
        "init_seed": m.init_seed,  # None unless the member has its own initialisation
        "step": m.step,
    }


def _check_against(
    reference: dict[str, torch.Tensor], state: dict[str, torch.Tensor], m: Member
) -> None:
    from modeconn.population.members import check_compatible

    # the skeleton's non-persistent or integer buffers may be absent from a checkpoint
    floats = {k: v for k, v in reference.items() if v.is_floating_point()}
    cand = {k: v for k, v in state.items() if k in floats or v.is_floating_point()}
    check_compatible(floats, cand, name=m.id, reference_name="the study's model")
