"""mae-dense: MAE pretraining and its transfer to ADE20K UperNet and COCO ViT Mask R-CNN.

``import mae_dense`` is plain PyTorch: it never imports mmengine, mmseg or mmdet. The OpenMMLab
registration lives in :mod:`mae_dense.openmmlab` alone.
"""

__version__ = '0.1.0'
