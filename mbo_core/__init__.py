"""Code shared by every stage of mbo-pipeline: book engine, DBN input, wire schemas, settings."""
