"""One LightningModule per method family; thin: batch -> losses -> metrics."""
