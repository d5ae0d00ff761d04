"""Networks (pure ``torch.nn``, no Lightning): shared building blocks and one file per method."""
