"""The GGUF Creation agent's typed tool surface: build GGUF files, deploy versions, list deployments."""

from __future__ import annotations

import time
from pathlib import Path

import anyio
import anyio.from_thread
import anyio.to_thread

from agents.gguf_creation.build import BuildPlan, build_files, tool_name
from agents.gguf_creation.deploy import deploy_version, publish_layout, read_manifest
from agents.gguf_creation.regression import compare_reports, load_regression_settings
from agents.llm.adapter_file import read_adapter
from agents.llm.base_model import resolve_base_model
from agents.llm.layout import (
    VersionLayout,
    build_folder,
    builds_root,
    domains_of,
    layout_of,
    model_layouts,
    trained_dir,
)
from protocol import InvalidParams
from protocol.agents.gguf_creation import (
    BuiltModel,
    CompareVersionsInput,
    CreateGgufInput,
    CreateGgufOutput,
    DeployInput,
    DeployOutput,
    GgufFile,
    ListModelsInput,
    ListModelsOutput,
    ModelMetadata,
    VersionFilesInput,
    VersionFilesOutput,
)
from protocol.agents.quality_assurance import ModelQAReport, ReportComparison
from runtime import Agent, CallContext, tool, utc_now_iso, write_json

__all__ = ["GgufCreationAgent"]


class GgufCreationAgent(Agent):
    """Turns adapters into GGUF files in the models layout and deploys validated versions."""

    name = "gguf_creation"
    description = "LoRA adapter → adapter GGUF, merged and quantized GGUF, metadata; versioned deployment."
    concurrency = 1

    @tool(idempotent=True)
    async def create_gguf(self, params: CreateGgufInput, ctx: CallContext) -> CreateGgufOutput:
        """Write the adapter GGUF (llama.cpp LoRA format) and the merged model quantized by llama.cpp.

        Files go to the models layout (D domain, C category, A/B universal) with a metadata JSON
        beside them: base model and its sha256, LoRA parameters, data stats, training metrics,
        file sizes and hashes.
        """
        catalog, settings = self.ctx.catalog, self.ctx.settings
        domains = domains_of(params.scope, params.target, catalog)
        layouts = model_layouts(params.scope, params.target, catalog)
        base = resolve_base_model(params.base_model)
        work_dir = trained_dir(settings.data_dir, params.scope, params.target, catalog)
        adapter_path = await self.ctx.artifacts.fetch(params.adapter, work_dir / "inputs" / "adapter.safetensors")
        adapter = await anyio.to_thread.run_sync(read_adapter, adapter_path)
        plan = BuildPlan(
            request=params,
            base=base,
            adapter=adapter,
            layouts=layouts,
            build_root=builds_root(settings.data_dir),
            work_dir=work_dir,
            cache_dir=settings.model_cache,
        )

        report_progress = ctx.progress_reporter()

        def progress(message: str) -> None:
            report_progress(0, None, message)

        built = await anyio.to_thread.run_sync(lambda: build_files(plan, progress))
        models = []
        for layout in layouts:
            files = []
            for file in built.per_model[layout.model_id]:
                ref = None
                if file.kind != "merged_f16":
                    ref = await self.ctx.artifacts.put_file(Path(file.path), media_type="application/x-gguf")
                files.append(file.model_copy(update={"artifact": ref}))
            category = (
                catalog.domain(params.target).category
                if params.scope == "domain"
                else (params.target if params.scope == "category" else None)
            )
            description = (
                catalog.domain(params.target).description
                if params.scope == "domain"
                else f"{params.scope} model over {len(domains)} domains"
                + (" (smaller quantization)" if layout.lite else "")
            )
            metadata = ModelMetadata(
                model_id=layout.model_id,
                scope=params.scope,
                domain=params.target if params.scope == "domain" else None,
                category=category,
                domains=domains,
                description=description,
                version=None,
                base_model=base.name,
                base_model_path=base.location,
                base_sha256=built.base_sha256,
                lora={
                    "r": adapter.rank,
                    "alpha": adapter.alpha,
                    "dropout": adapter.config.get("lora_dropout"),
                    "target_modules": adapter.target_modules,
                },
                system_prompt=params.system_prompt,
                data_stats=params.data_stats,
                training=params.training,
                qa=None,
                files=files,
                created_at=utc_now_iso(),
                tool=tool_name(),
            )
            metadata_path = build_folder(settings.data_dir, layout) / layout.metadata_name
            await anyio.to_thread.run_sync(write_json, metadata_path, metadata)
            ref = await self.ctx.artifacts.put_file(metadata_path, media_type="application/json")
            models.append(
                BuiltModel(model_id=layout.model_id, files=files, metadata_path=str(metadata_path), metadata=ref)
            )
        self.log.info("gguf created", models=[m.model_id for m in models], seconds=built.seconds)
        return CreateGgufOutput(models=models, seconds=built.seconds)

    @tool(idempotent=True, destructive=True)
    async def deploy(self, params: DeployInput) -> DeployOutput:
        """Deploy a QA-passed model as a new version (atomic; production's previous version → legacy).

        Refuses anything whose QA report did not pass or did not examine these exact files.
        """
        settings = self.ctx.settings
        try:
            metadata = ModelMetadata.model_validate_json(await self.ctx.artifacts.read_bytes(params.metadata))
            report = ModelQAReport.model_validate_json(await self.ctx.artifacts.read_bytes(params.qa_report))
        except ValueError as exc:
            raise InvalidParams(f"metadata or QA report is not valid: {exc}") from exc

        regression = load_regression_settings(settings.catalog_dir)

        def fetch(file: GgufFile, destination: Path) -> None:
            assert file.artifact is not None
            anyio.from_thread.run(self.ctx.artifacts.fetch, file.artifact, destination)

        started = time.monotonic()
        deployment = await anyio.to_thread.run_sync(
            lambda: deploy_version(
                settings.models_dir,
                metadata,
                report,
                lane=params.lane,
                version=params.version,
                job_id=params.job_id,
                fetch=fetch,
                now=utc_now_iso(),
                regression=regression,
                allow_regression=params.allow_regression,
            )
        )
        if deployment.entry.lane == "production":
            # Also when it was deployed already: a crash may have come between the two.
            layout = layout_of(metadata.model_id, metadata.scope, metadata.domain, metadata.category, self.ctx.catalog)
            await anyio.to_thread.run_sync(publish_layout, settings.models_dir, deployment.entry, layout)
        self.log.info(
            "deployed",
            model=metadata.model_id,
            version=deployment.entry.version,
            lane=deployment.entry.lane,
            already=deployment.already_deployed,
            seconds=round(time.monotonic() - started, 3),
        )
        return DeployOutput(
            entry=deployment.entry,
            retired=deployment.retired,
            manifest_path=str(settings.models_dir / "manifest.json"),
            already_deployed=deployment.already_deployed,
            comparison=deployment.comparison,
        )

    @tool(read_only=True)
    async def compare_versions(self, params: CompareVersionsInput) -> ReportComparison:
        """Two deployed versions of a model side by side on their QA reports (the regression gate's view)."""
        models_dir = self.ctx.settings.models_dir

        def load() -> ReportComparison:
            manifest = read_manifest(models_dir)
            reports = {}
            for version in (params.baseline, params.candidate):
                entry = next(
                    (e for e in manifest.models if e.model_id == params.model_id and e.version == version), None
                )
                if entry is None:
                    raise InvalidParams(f"{params.model_id} {version} is not deployed")
                path = models_dir / VersionLayout.of(entry).qa_report_path
                try:
                    reports[version] = ModelQAReport.model_validate_json(path.read_bytes())
                except (OSError, ValueError) as exc:
                    raise InvalidParams(f"cannot read the QA report of {params.model_id} {version}: {exc}") from exc
            settings = load_regression_settings(self.ctx.settings.catalog_dir)
            return compare_reports(reports[params.baseline], reports[params.candidate], settings, params.baseline)

        return await anyio.to_thread.run_sync(load)

    @tool(read_only=True)
    async def version_files(self, params: VersionFilesInput) -> VersionFilesOutput:
        """A deployed version's model files (artifact references) and text records: what an export copies."""
        models_dir = self.ctx.settings.models_dir

        def load() -> VersionFilesOutput:
            entries = [e for e in read_manifest(models_dir).models if e.model_id == params.model_id]
            wanted = [e for e in entries if (e.version == params.version if params.version else e.lane == "production")]
            if not wanted:
                which = params.version or "production version"
                known = ", ".join(f"{e.version} ({e.lane})" for e in entries) or "none"
                raise InvalidParams(f"{params.model_id} has no deployed {which}; deployed: {known}")
            entry = wanted[0]
            layout = VersionLayout.of(entry)
            records = (
                layout.card_path,
                layout.modelfile_path,
                layout.adapter_modelfile_path,
                layout.metadata_path,
                layout.qa_report_path,
            )
            documents = {p.name: (models_dir / p).read_text() for p in records if (models_dir / p).is_file()}
            qa_report = layout.qa_report_path.name
            return VersionFilesOutput(
                entry=entry, documents=documents, qa_report=qa_report if qa_report in documents else None
            )

        return await anyio.to_thread.run_sync(load)

    @tool(read_only=True)
    async def list_models(self, params: ListModelsInput) -> ListModelsOutput:
        """Deployed model versions from ``models/manifest.json``, newest first."""
        settings = self.ctx.settings
        manifest = await anyio.to_thread.run_sync(read_manifest, settings.models_dir)
        entries = [
            e
            for e in manifest.models
            if (params.lane is None or e.lane == params.lane)
            and (params.model_id is None or e.model_id == params.model_id)
        ]
        entries.sort(key=lambda e: e.deployed_at, reverse=True)
        return ListModelsOutput(models=entries, manifest_path=str(settings.models_dir / "manifest.json"))
