"""The fine-tuning methods, one folder per family; base.py holds what every LightningModule
shares."""
