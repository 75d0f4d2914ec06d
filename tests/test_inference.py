"""The short views of associated words that the quick start, the pipeline and the demo print."""

from modeling_iamm.inference import compact_associations, top_associations

ASSOCIATIONS = {
    "utterance-situation": [
        {"keyword": "dog", "keyword_weight": 0.9, "associated": [["died", 0.8], ["sad", 0.7], ["x", 0.1], ["y", 0.1]]},
        {"keyword": "dog", "keyword_weight": 0.5, "associated": [["z", 0.8]]},  # a repeated keyword: kept once
        {"keyword": "i", "keyword_weight": 0.6, "associated": [["my", 0.5]]},
    ],
    "utterance-history": [],
    "selected_memory_words": [["dog", 0.91], ["lost", 0.8]],
}


def test_compact_view_keeps_the_strongest_distinct_keywords():
    view = compact_associations(ASSOCIATIONS, keywords_per_pair=1, words_per_keyword=2)
    assert view["keywords"]["utterance-situation"] == [
        {"keyword": "dog", "weight": 0.9, "associated": [["died", 0.8], ["sad", 0.7]]}]
    assert view["keywords"]["utterance-history"] == [] and view["memory_words"] == [["dog", 0.91], ["lost", 0.8]]


def test_text_view():
    assert top_associations(ASSOCIATIONS) == {
        "utterance-situation": ["dog -> died, sad, x (0.90)", "i -> my (0.60)"],
        "utterance-history": [],
        "selected_memory_words": ["dog (0.91)", "lost (0.80)"],
    }
