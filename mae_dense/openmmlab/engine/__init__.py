"""What every run through mmengine gets from the project, whatever its task (registered on import).

* ``MAEDenseRunner`` (:mod:`.runner`): mmengine's Runner whose loaders fit the machine; building it installs
  the checkpoint-loading policy (:mod:`.loading`) and atomic writes (:mod:`.checkpointing`) into mmengine,
  and applies the CPU fallbacks (:mod:`.fallbacks`) to its config and model;
* ``CrashSafeCheckpointHook`` (:mod:`.checkpointing`): saves that survive a kill, a resume that skips a
  broken newest checkpoint, no rank past a checkpoint that is not on disk;
* ``ExactResumeIterBasedTrainLoop``/``ExactResumeEpochBasedTrainLoop`` (:mod:`.loops`) and
  ``RandomStateHook`` (:mod:`.random_state`): a resumed run continues where the checkpoint was written;
* ``AmpOptimWrapperWithCpuFallback``, ``MMDistributedDataParallelCPU`` (:mod:`.fallbacks`);
* ``ProgressBarHook`` (:mod:`.progress`): the test tool's progress bar.

Every name is the project's own: importing this changes none of mmengine's, mmseg's or mmdet's.
"""

from . import checkpointing, fallbacks, loading, loops, progress, random_state, runner  # noqa: F401  (register)
