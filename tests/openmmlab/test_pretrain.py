"""MAE pretraining through mmengine's Runner on a synthetic image folder (the masking and the loss are tested
in test_mae_model.py): loss falls, exact resume, transfer of the written checkpoint, strict load_from,
effective batch and lr, AMP wrapper, non-finite losses, data errors and unreadable images."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import (
    TINY_MAE,
    TINY_MAE_CONFIG,
    Killed,
    assert_same_weights,
    config_with_hooks,
    log_text,
    model_state,
    official_layout,
)
from mmengine.hooks import Hook
from mmengine.registry import HOOKS, OPTIM_WRAPPERS

import mae_dense.openmmlab  # noqa: F401  (registries, loading policy, CPU fallbacks)
import mae_dense.openmmlab.pretrain as pretrain
from mae_dense.checkpoint import load_backbone, load_file
from mae_dense.cli.train import main as train_main
from mae_dense.data import generate_synthetic_image_folder
from mae_dense.data.image_folder import ImageFolder, list_image_folder
from mae_dense.errors import DataError, NonFiniteLossError
from mae_dense.models.vit import VisionTransformer
from mae_dense.openmmlab.pretrain.optim import SkipNonFiniteAmpOptimWrapper

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / 'configs/pretrain/mae_vit-base-p16_8xb512-amp-coslr-1600e_in1k.py'
TINY_BLR = 0.06  # the demo config's base_lr


def train(
    work_dir: Path, data_root: Path, *options: str, config: Path = TINY_MAE_CONFIG, resume: bool = False
) -> int:
    """``tools/train.py CONFIG`` in this process; a unique experiment name keeps mmengine's loggers apart."""
    argv = [str(config), '--work-dir', str(work_dir), '--cfg-options']
    argv += [f'experiment_name={work_dir.parent.name}-{work_dir.name}']
    argv += [f'train_dataloader.dataset.data_root={data_root}', *options]
    return train_main(argv + (['--resume'] if resume else []))


def scalars(work_dir: Path) -> list[dict]:
    (path,) = work_dir.glob('*/vis_data/scalars.json')
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope='module')
def folder(tmp_path_factory) -> Path:
    """4 classes x 4 images: batch 4 gives 4 iterations per epoch."""
    return generate_synthetic_image_folder(tmp_path_factory.mktemp('imgs'), images_per_class=4, size=48)


# ---------------------------------------------------------------------------------------------------- data
def test_folder_layouts_and_augmentation(tmp_path):
    root = generate_synthetic_image_folder(tmp_path / 'nested', num_classes=2, images_per_class=2, size=40)
    paths, labels, classes = list_image_folder(root / 'train')
    assert classes == ['class_000', 'class_001'] and labels == [0, 0, 1, 1]
    flat = tmp_path / 'flat' / 'train'
    flat.mkdir(parents=True)
    for p in paths:
        (flat / Path(p).name.replace('img', Path(p).parent.name)).write_bytes(
            (root / 'train' / p).read_bytes()
        )
    (flat / 'notes.txt').write_text('not an image')
    assert list_image_folder(flat)[1:] == ([-1] * 4, [])

    ds = ImageFolder(root, img_size=24)
    torch.manual_seed(0)
    sample = ds[0]
    assert sample['inputs'].dtype == torch.uint8 and sample['inputs'].shape == (3, 24, 24)
    assert sample['skipped'] == 0
    torch.manual_seed(0)
    assert torch.equal(ds[0]['inputs'], sample['inputs'])  # augmentation follows torch's RNG


@pytest.mark.parametrize('make', ['missing', 'empty'])
def test_bad_folder_is_one_line_error(tmp_path, capsys, make):
    data_root = tmp_path / 'data'
    if make == 'empty':
        (data_root / 'train' / 'class_a').mkdir(parents=True)
    with pytest.raises(DataError, match='train'):
        len(ImageFolder(data_root))
    assert train(tmp_path / 'work', data_root) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith(f'error: {data_root / "train"}: ')
    assert ('not found' if make == 'missing' else 'no images found') in err[0]
    assert 'train_dataloader.dataset.data_root=DIR' in err[0]


def test_unreadable_images_are_skipped_and_counted(tmp_path):
    root = generate_synthetic_image_folder(tmp_path / 'data', num_classes=2, images_per_class=4, size=40)
    good = next((root / 'train' / 'class_000').glob('*.jpg'))
    (root / 'train' / 'class_000' / 'broken.jpg').write_bytes(b'not a jpeg at all')
    (root / 'train' / 'class_001' / 'truncated.jpg').write_bytes(good.read_bytes()[:200])

    ds = ImageFolder(root, img_size=32)
    samples = [ds[i] for i in range(len(ds))]  # no exception
    assert len(ds) == 10 and sum(s['skipped'] for s in samples) == 2 and ds.num_skipped == 2

    # Through the Runner (10 files, batch 5: 2 iterations per epoch): each epoch's count is logged.
    work = tmp_path / 'work'
    assert train(work, root, 'train_dataloader.batch_size=5', 'train_cfg.max_epochs=2') == 0
    log = log_text(work)
    assert 'broken.jpg: unreadable image skipped' in log and 'truncated.jpg: unreadable image skipped' in log
    assert 'epoch 1: 2 unreadable images skipped (2 in this run' in log
    assert 'epoch 2: 2 unreadable images skipped (4 in this run' in log


# ---------------------------------------------------------------------------------------------- training
def test_loss_falls_on_synthetic_folder(tmp_path):
    root = generate_synthetic_image_folder(tmp_path / 'data', num_classes=4, images_per_class=16, size=48)
    work = tmp_path / 'work'
    options = ['train_cfg.max_epochs=5', 'default_hooks.logger.interval=1', 'log_processor.window_size=1']
    assert train(work, root, *options) == 0  # 64 images, batch 16: 20 iterations
    losses = [s['loss'] for s in scalars(work) if 'loss' in s]
    assert len(losses) == 20
    first, last = sum(losses[:4]) / 4, sum(losses[-4:]) / 4
    assert last < 0.85 * first, losses


@pytest.mark.filterwarnings('ignore:Detected call of .scheduler.step')  # no step: expected
def test_checkpoint_transfers_to_seg_and_det_and_lr_follows_effective_batch(tmp_path, folder):
    work = tmp_path / 'work'
    options = [
        'train_dataloader.batch_size=8',  # 16 images: 2 iterations per epoch, 4 in all
        'optim_wrapper.accumulative_counts=2',
        'train_cfg.max_epochs=2',
        'default_hooks.checkpoint.by_epoch=False',
        'default_hooks.checkpoint.interval=2',
        'default_hooks.checkpoint.max_keep_ckpts=2',
        'model.grad_checkpointing=True',
    ]
    assert train(work, folder, *options) == 0
    # effective batch = 8 per process x 2 accumulation steps x 1 process; lr = blr x 16 / 256
    log = log_text(work)
    assert 'effective batch 16 = 8 per process x 2 accumulation steps x 1 processes' in log
    assert f'lr = base_lr {TINY_BLR:g} x 16 / 256 = {TINY_BLR * 16 / 256:.6g}' in log

    ckpt = load_file(work / 'iter_2.pth')
    assert {'state_dict', 'optimizer', 'param_schedulers', 'message_hub', 'rng_states'} <= set(ckpt)
    assert ckpt['meta']['iter'] == 2
    assert all(v == pytest.approx(TINY_BLR * 16 / 256) for v in ckpt['param_schedulers'][0]['base_values'])
    sd = ckpt['state_dict']
    assert 'backbone.blocks.0.attn.qkv.weight' in sd and 'decoder_pred.weight' in sd and 'mask_token' in sd
    assert not any(k.startswith(('mae.', 'module.', 'data_preprocessor')) for k in sd)

    tiny = dict(patch_size=8, embed_dim=64, depth=2, num_heads=4)
    seg = VisionTransformer(mode='seg', img_size=32, init_values=1.0, out_indices=[0, 1], **tiny)
    det = VisionTransformer(
        mode='det', img_size=64, pretrain_img_size=32, window_size=4, global_blocks=[1], **tiny
    )
    for vit in (seg, det):
        report = load_backbone(vit, work / 'iter_2.pth', log=False)
        assert report.layout.name == 'mae' and report.layout.prefix == 'backbone.'
        for name in ('blocks.1.mlp.fc2.weight', 'blocks.0.attn.qkv.weight', 'patch_embed.proj.weight'):
            assert torch.equal(vit.state_dict()[name], sd[f'backbone.{name}'])


@HOOKS.register_module(name='KillAfterEpochForTests', force=True)
class _KillAfterEpoch(Hook):
    """Stands for a killed job: raises after the checkpoint of ``epoch`` has been written."""

    priority = 'LOWEST'

    def __init__(self, epoch: int) -> None:
        self.epoch = epoch

    def after_train_epoch(self, runner) -> None:
        if runner.epoch + 1 == self.epoch:
            raise Killed


def test_resume_after_kill_equals_uninterrupted_run(tmp_path, folder):
    # 16 images, batch 4: 4 iterations per epoch; 2 epochs straight vs 1 epoch + kill + resume + 1 epoch.
    # (Without the restored RNG states the crops and masks of epoch 2 differ and so do the weights.)
    options = [
        'train_dataloader.batch_size=4',
        'train_cfg.max_epochs=2',
        'default_hooks.checkpoint.interval=1',
        'default_hooks.checkpoint.max_keep_ckpts=2',
    ]
    assert train(tmp_path / 'straight', folder, *options) == 0

    killed = config_with_hooks(tmp_path, TINY_MAE_CONFIG, dict(type='KillAfterEpochForTests', epoch=1))
    with pytest.raises(Killed):
        train(tmp_path / 'resumed', folder, *options, config=killed)
    assert (tmp_path / 'resumed' / 'epoch_1.pth').is_file()
    assert not (tmp_path / 'resumed' / 'epoch_2.pth').exists()
    assert train(tmp_path / 'resumed', folder, *options, resume=True) == 0
    assert 'restored the RNG states of 1 process(es)' in log_text(tmp_path / 'resumed')

    a = model_state(tmp_path / 'straight' / 'epoch_2.pth')
    assert_same_weights(a, model_state(tmp_path / 'resumed' / 'epoch_2.pth'))
    first = model_state(tmp_path / 'resumed' / 'epoch_1.pth')
    assert not torch.equal(first['decoder_pred.weight'], a['decoder_pred.weight'])  # epoch 2 did train


def test_load_from_continues_strictly(tmp_path, folder, capsys):
    options = ['train_dataloader.batch_size=16', 'train_cfg.max_epochs=2', 'resume=False']  # 2 iterations
    first = tmp_path / 'first'
    assert train(first, folder, *options) == 0
    ckpt = first / 'epoch_2.pth'
    # a previous run's full checkpoint, and the same weights in the official models_mae.py layout
    official = tmp_path / 'checkpoint-0.pth'
    torch.save({'model': official_layout(model_state(ckpt)), 'epoch': 0}, official)
    for src in (ckpt, official):
        assert train(tmp_path / f'from_{src.stem}', folder, *options, f'load_from={src}') == 0
        assert f'Load checkpoint from {src}' in log_text(tmp_path / f'from_{src.stem}')

    # an encoder-only file cannot continue pretraining: one line, not a silent partial load
    encoder_only = tmp_path / 'encoder.pth'
    torch.save({k: v for k, v in model_state(ckpt).items() if k.startswith('backbone.')}, encoder_only)
    capsys.readouterr()
    assert train(tmp_path / 'bad', folder, *options, f'load_from={encoder_only}') == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert (
        len(err) == 1
        and f'{encoder_only}: MAE checkpoint does not fit the model: missing keys: mask_token' in err[0]
    )


# ------------------------------------------------------------------------------------- mixed precision
def _tiny_model() -> pretrain.MAEPretrainer:
    torch.manual_seed(0)
    return pretrain.MAEPretrainer(arch=None, **TINY_MAE, norm_pix_loss=True)


def test_config_optim_wrapper_is_amp_with_cpu_fallback():
    from mmengine.config import Config
    from mmengine.optim import AmpOptimWrapper, build_optim_wrapper

    cfg = Config.fromfile(str(BASE))
    assert cfg.optim_wrapper.type == 'SkipNonFiniteAmpOptimWrapper' and cfg.optim_wrapper.dtype == 'float16'
    assert cfg.optim_wrapper.loss_scale == 'dynamic'
    wrapper_cfg = cfg.optim_wrapper.to_dict()
    wrapper_cfg['paramwise_cfg']['batch_size'] = 512  # what MAEPretrainLoop fills in
    model = _tiny_model()
    wrapper = build_optim_wrapper(model, wrapper_cfg)
    assert isinstance(wrapper, AmpOptimWrapper)
    assert wrapper.optimizer.defaults['lr'] == pytest.approx(1.5e-4 * 512 / 256)  # one process
    assert wrapper.optimizer.defaults['betas'] == (0.9, 0.95)
    decay, no_decay = wrapper.optimizer.param_groups
    assert decay['weight_decay'] == 0.05 and no_decay['weight_decay'] == 0.0
    names = {id(p): n for n, p in model.named_parameters()}
    exempt = {names[id(p)] for p in no_decay['params']}
    assert {
        'backbone.cls_token',
        'mask_token',
        'backbone.blocks.0.norm1.weight',
        'decoder_pred.bias',
    } <= exempt
    assert not {'backbone.pos_embed', 'decoder_pos_embed'} & (
        exempt | {names[id(p)] for p in decay['params']}
    )
    assert all(p.ndim > 1 and not names[id(p)].endswith('.bias') for p in decay['params'])
    if torch.cuda.is_available():  # the real thing: fp16 autocast + GradScaler
        assert not wrapper.cpu_fallback and wrapper.loss_scaler is not None
        return
    assert wrapper.cpu_fallback and wrapper.cast_dtype is None  # fp16 on CPU -> fp32, with one warning

    wrapper_cfg['dtype'] = 'bfloat16'
    bf16 = build_optim_wrapper(model, wrapper_cfg)
    assert bf16.cpu_fallback and bf16.cast_dtype == torch.bfloat16
    seen = []
    handle = model.decoder_pred.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    with bf16.optim_context(model):
        loss = model(
            model.data_preprocessor(dict(inputs=torch.zeros(2, 3, 32, 32, dtype=torch.uint8)))['inputs']
        )
    handle.remove()
    assert seen == [torch.bfloat16] and torch.isfinite(loss['loss'])


def _decayed(model, wrapper) -> set[str]:
    names = {id(p): n for n, p in model.named_parameters()}
    return {names[id(p)] for g in wrapper.optimizer.param_groups if g['weight_decay'] for p in g['params']}


@pytest.mark.parametrize('wd_policy', ['mmpretrain', 'official'])
def test_pretraining_weight_decay_sets_equal_the_published_recipes(wd_policy):
    from mmengine.optim import build_optim_wrapper

    model = _tiny_model()
    paramwise = dict(base_lr=1.5e-4, batch_size=8, wd_policy=wd_policy)
    optim = dict(type='AdamW', betas=(0.9, 0.95), weight_decay=0.05)
    ours = build_optim_wrapper(
        model,
        dict(optimizer=optim, constructor='MAEPretrainOptimWrapperConstructor', paramwise_cfg=paramwise),
    )
    if wd_policy == 'mmpretrain':
        # mmpretrain's configs/mae: mmengine's constructor with these custom keys (its 'ln' is our 'norm')
        keys = ('norm', 'bias', 'pos_embed', 'mask_token', 'cls_token')
        ref = build_optim_wrapper(
            model,
            dict(
                optimizer=dict(optim, lr=1e-3),
                paramwise_cfg=dict(custom_keys={k: dict(decay_mult=0.0) for k in keys}),
            ),
        )
        expect = _decayed(model, ref)
    else:
        # main_pretrain.py: timm 0.3.2's add_weight_decay(model, wd) with no skip list
        expect = {
            n
            for n, p in model.named_parameters()
            if p.requires_grad and not (p.ndim == 1 or n.endswith('.bias'))
        }
    got = _decayed(model, ours)
    assert got == expect
    assert ({'backbone.cls_token', 'mask_token'} <= got) == (wd_policy == 'official')


def _wrapper(model: torch.nn.Module, **kwargs) -> SkipNonFiniteAmpOptimWrapper:
    return OPTIM_WRAPPERS.build(
        dict(type='SkipNonFiniteAmpOptimWrapper', **kwargs),
        default_args=dict(optimizer=torch.optim.SGD(model.parameters(), lr=0.1)),
    )


def test_nonfinite_loss_skips_the_step_and_aborts_after_n_in_a_row():
    model = torch.nn.Linear(3, 1)
    wrapper = _wrapper(model, max_nonfinite_in_a_row=3)
    x = torch.ones(2, 3)

    def params():
        return [p.detach().clone() for p in model.parameters()]

    before = params()
    wrapper.update_params(model(x).sum() * float('nan'))
    assert all(torch.equal(a, b) for a, b in zip(before, params()))  # skipped
    assert (wrapper.nonfinite_losses, wrapper.skipped_steps, wrapper.nonfinite_in_a_row) == (1, 1, 1)
    wrapper.update_params(model(x).sum())
    assert not torch.equal(before[0], params()[0]) and wrapper.nonfinite_in_a_row == 0  # a finite loss trains
    state = wrapper.state_dict()
    assert state['nonfinite'] == dict(losses=1, skipped_steps=1, in_a_row=0)

    wrapper.update_params(model(x).sum() * float('inf'))
    wrapper.update_params(model(x).sum() * float('nan'))
    with pytest.raises(NonFiniteLossError, match='3 iterations in a row') as info:
        wrapper.update_params(model(x).sum() * float('nan'))
    assert '\n' not in str(info.value)

    restored = _wrapper(model, max_nonfinite_in_a_row=3)
    restored.load_state_dict(state)
    assert (restored.nonfinite_losses, restored.skipped_steps) == (1, 1)


def test_nonfinite_loss_drops_its_accumulation_window():
    model = torch.nn.Linear(3, 1)
    wrapper = _wrapper(model, accumulative_counts=2)
    wrapper.initialize_count_status(model, 0, 100)
    before = model.weight.detach().clone()
    wrapper.update_params(model(torch.ones(2, 3)).sum())  # finite, accumulated
    wrapper.update_params(model(torch.ones(2, 3)).sum() * float('nan'))  # poisons the window: no step
    assert torch.equal(model.weight, before) and wrapper.skipped_steps == 1
    assert model.weight.grad is None or not model.weight.grad.any()  # the window's gradients are gone
    wrapper.update_params(model(torch.ones(2, 3)).sum())
    wrapper.update_params(model(torch.ones(2, 3)).sum())  # a clean window steps
    assert not torch.equal(model.weight, before)


@pytest.mark.filterwarnings('ignore:Detected call of .scheduler.step')  # no step: expected
def test_runner_aborts_on_nonfinite_losses_with_one_line(tmp_path, folder, capsys):
    # std 0 turns every pixel into inf/nan: every loss is non-finite
    options = [
        'train_dataloader.batch_size=4',
        'model.data_preprocessor.std=[0.0,0.0,0.0]',
        'optim_wrapper.max_nonfinite_in_a_row=3',
    ]
    assert train(tmp_path / 'work', folder, *options) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith('error: the loss was non-finite in 3 iterations in a row')
    log = log_text(tmp_path / 'work')
    assert 'iteration 1: non-finite loss' in log and 'iteration 2: non-finite loss' in log
