"""moext: micro-expression recognition methods (MoExt, SRMCL, AKMNet) for PyTorch Lightning, on one
data layer, one leave-one-subject-out protocol and one evaluation."""

__version__ = "0.1.0"
