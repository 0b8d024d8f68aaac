"""What a person reads: the Markdown and HTML reports and the plots, drawn from result files only."""
