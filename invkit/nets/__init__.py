"""Auxiliary networks: the frozen, pretrained nets that losses and metrics run images through.

None of them is a generator or the encoder; each module re-assembles one published network in
plain torch and loads its released weights (from the zoo, a local path, or random weights of
the real layout for tests):

* :mod:`.iresnet`: insightface's IResNet (the backbone of ArcFace and of the FS encoder);
* :mod:`.arcface`: ArcFace IResNet-50 face-identity embeddings;
* :mod:`.bisenet`: BiSeNet face parsing (19 classes);
* :mod:`.lpips`: LPIPS (AlexNet / VGG16 trunk + the ``lpips`` distribution's linear heads);
* :mod:`.fid`: the FID Inception-v3 (pool3 features) and the Fréchet distance.

May import: :mod:`invkit.io` (weights files, zoo) and torch. Never the core interfaces.
"""
