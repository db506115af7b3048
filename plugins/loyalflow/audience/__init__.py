"""Who is due: segment queries over the warehouse, programs (nurture) and due steps."""
