"""Tables, figures, the report, benchmark comparison and the precision gate, from what results/ holds."""
