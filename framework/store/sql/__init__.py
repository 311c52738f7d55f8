"""What the SQL backends share: the dialect layer (``dialect``), the tables (``schema``), the statements
(``statements``), the row mappers (``rows``) and the methods written once over them (``common``)."""
