"""What the stored data says: transformer-area line loss (computed in SQL over the readings)."""
