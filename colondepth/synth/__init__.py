"""Synthetic colonoscopy generator (imports nothing heavy until used).

- :mod:`colondepth.synth.recipe`: pydantic recipes (synth/*.yaml), range sampling
- :mod:`colondepth.synth.colon`: centreline, radius field (folds, taeniae, bumps, fluid) -> trimesh
- :mod:`colondepth.synth.appearance`: mucosa textures, camera response, vignetting, FOV masks
- :mod:`colondepth.synth.trajectory`: camera paths inside the lumen
- :mod:`colondepth.synth.render`: the only pyrender/OpenGL user
- :mod:`colondepth.synth.writer`: on-disk layout (PNG, PLY, TUM, video)
- :mod:`colondepth.synth.generate`: :func:`~colondepth.synth.generate.generate_dataset` (the API the
  ``colondepth synth`` command and training code call)
"""
