"""ctdiff evaluation: metrics for generated vs real CT, reports, and blinded review sessions."""
