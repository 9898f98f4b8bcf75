"""Networks and how they run: one module each, no import between them goes both ways.

- :mod:`~segrobust.models.unet`: the paper's network (Isensee et al. 2017 3D UNet);
- :mod:`~segrobust.models.monai_nets`: MONAI's 3D networks as segrobust networks;
- :mod:`~segrobust.models.registry`: network name → builder (the paper's, MONAI's, those of
  external models), :func:`~segrobust.models.registry.build` / ``record`` / ``unwrap``;
- :mod:`~segrobust.models.kernels`: the oneDNN convolution, chosen when a network is built;
- :mod:`~segrobust.models.checkpoints`: model files, segrobust's and external ones;
- :mod:`~segrobust.models.device`: device, bf16 policy, the argmax forward.

This package imports none of them itself: a job's code digest (:mod:`segrobust.digests`)
holds only the modules it uses.
"""
