import statehub


def test_update_then_flush_sees_snapshot_then_delta() -> None:
    state = statehub.StateDictionary()
    state.update_state("a", statehub.DictionaryChange({"x": 1}))
    with state.get_change_buffer() as view:
        assert view.flush_changed_blocking().updates == {"x": 1}
        state.update_state("a", statehub.DictionaryChange({"x": 2}, ["y"]))
        change = view.flush_changed_blocking()
    assert change.updates == {"x": 2}
    assert change.removals == {"y"}
    assert state.revision == 2
