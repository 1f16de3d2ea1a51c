"""Files, tables, folds and transforms: everything that knows about data, nothing about models."""
