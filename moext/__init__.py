"""moext: micro-expression recognition methods for PyTorch Lightning.

MoExt, SRMCL, AKMNet and the baselines STSTNet, OFF-ApexNet, RCN-A and HTNet, all on one data
layer (seven databases), one leave-one-subject-out protocol and one evaluation.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load_bundle"]


def __getattr__(name: str):
    """``moext.load_bundle``: :func:`moext.experiment.bundle.load_bundle`, imported on first use.

    Importing ``moext`` stays free of Lightning.
    """
    if name == "load_bundle":
        # lazy: the package's front; the experiment layer loads only when a bundle is loaded
        from moext.experiment.bundle import load_bundle

        return load_bundle
    raise AttributeError(f"module 'moext' has no attribute {name!r}")
